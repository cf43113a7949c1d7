"""tests/recipes trains with torch; without the torch extra it is not collected."""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("torch") else ["*.py"]
