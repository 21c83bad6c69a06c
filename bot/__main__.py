"""The ``steward`` command's entry: Ctrl-C or SIGTERM while it loads ends it as quietly as
after."""

from __future__ import annotations

import signal


def main() -> None:
    # Before the imports: a stop in their seconds ended it by the default action.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        from bot.cli import main as command  # seconds of imports on a loaded machine
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    command()


if __name__ == "__main__":
    main()
