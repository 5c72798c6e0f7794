"""``python -m rnnrbm``: the command line (for ``torchrun`` and environments without the script)."""

import sys

from rnnrbm.cli import main

sys.exit(main())
