"""Shared test support: helpers, servers and references the tests import (never from each other)."""
