"""``python -m pylvs`` is the same as the ``pylvs`` command."""

import sys

from pylvs.cli import main

sys.exit(main())
