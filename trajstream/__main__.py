"""``python -m trajstream``: the same as the ``trajstream`` command."""

import sys

from trajstream.cli import main

sys.exit(main())
