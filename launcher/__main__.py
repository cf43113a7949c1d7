"""``python -m launcher ...`` is ``ringrun ...``."""

from launcher.cli import main

if __name__ == "__main__":
    main(prog_name="ringrun")
