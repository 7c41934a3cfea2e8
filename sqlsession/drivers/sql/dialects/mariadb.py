"""MariaDB: the MySQL dialect (for an engine whose SQLAlchemy dialect name is "mariadb")."""

from .mysql import Dialect

__all__ = ["Dialect"]
