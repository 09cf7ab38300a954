"""``python -m seqpatch_core``: the command line (:mod:`seqpatch_core.cli`)."""

import sys

from seqpatch_core.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
