"""Reusable checks for users' and our own tests: validators that any sampler, plan or loader must
satisfy, and oracles written without the code under test."""
