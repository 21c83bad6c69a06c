"""The Slack channel, on slack-bolt."""

from bot.slack.channel import SlackChannel, SlackUnavailable

__all__ = ["SlackChannel", "SlackUnavailable"]
