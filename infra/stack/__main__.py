"""`python -m infra.stack up|down|status|env`."""

import sys

from infra.stack.commands import main

sys.exit(main())
