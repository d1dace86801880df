"""Plans as plain data: windows and splits, samplers, partitions, stream and rank plans. NumPy only:
no I/O, so every plan can be property-tested.
"""

from stzarr.lazy import attach

__getattr__, __dir__, __all__ = attach(
    globals(),
    {
        "BatchShuffleSampler": "stzarr.plan.sampler",
        "GlobalShuffleSampler": "stzarr.plan.sampler",
        "MODES": "stzarr.plan.rank",
        "PartitionPlan": "stzarr.plan.partition",
        "RankPartition": "stzarr.plan.partition",
        "RankPlan": "stzarr.plan.rank",
        "Sampler": "stzarr.plan.sampler",
        "StreamPlan": "stzarr.plan.stream",
        "WindowPlan": "stzarr.plan.windows",
        "WindowShuffleSampler": "stzarr.plan.sampler",
        "WindowSpec": "stzarr.plan.windows",
        "make_plan": "stzarr.plan.windows",
        "plan_partitions": "stzarr.plan.partition",
        "plan_rank": "stzarr.plan.rank",
        "plan_stream": "stzarr.plan.stream",
        "split_bounds": "stzarr.plan.windows",
        "split_bounds_at": "stzarr.plan.windows",
        "store_partitions": "stzarr.plan.partition",
    },
)
