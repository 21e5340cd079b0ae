"""Moderation: actions and the audit log, enforcement in the send path, reports, the
review queue and appeals, raid signals, automod (rules, regex, cache), and the
management of roles, channel overrides and tiers.
"""
