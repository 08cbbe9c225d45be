"""``python -m beam_ml.cli``: the same as the ``beam-ml`` command."""

import sys

from beam_ml.cli.main import main

sys.exit(main())
