"""`python -m genlab` (and `torchrun ... -m genlab train MODEL`): the `genlab` command."""

import sys

from .cli import main

sys.exit(main())
