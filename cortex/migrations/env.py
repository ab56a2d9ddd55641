"""Alembic environment: the connection comes from cortex.db.migrate()."""

from alembic import context
from sqlmodel import SQLModel

from cortex import models  # noqa: F401  (registers the tables)

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters by copy
)
with context.begin_transaction():
    context.run_migrations()
