import sys

from stzarr.cli import main

sys.exit(main())
