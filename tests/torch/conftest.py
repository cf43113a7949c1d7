"""tests/torch needs the torch extra (``pip install -e '.[torch]'``; ``make test`` installs
it); without torch these tests are not collected, rather than failing to import."""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("torch") else ["*.py"]
