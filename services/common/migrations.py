"""Entry point used by `make up` and the tests: apply every service's migrations."""

from services.common.db import migrate, migrate_all

__all__ = ["migrate", "migrate_all"]
