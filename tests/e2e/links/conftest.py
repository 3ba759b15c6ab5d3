"""The fixtures of the link tests: a hub with a study and an outside recipient's mailbox."""

from linktools import linkhub  # noqa: F401  (a fixture, shared by the tests of this folder)
