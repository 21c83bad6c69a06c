"""The ``steward`` command's entry: Ctrl-C while it loads ends it as quietly as after."""

from __future__ import annotations


def main() -> None:
    try:
        from bot.cli import main as command  # seconds of imports on a loaded machine
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    command()


if __name__ == "__main__":
    main()
