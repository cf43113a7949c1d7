"""``python -m ringrt_launcher ...`` is ``ringrun ...``."""

from ringrt_launcher.cli import main

if __name__ == "__main__":
    main(prog_name="ringrun")
