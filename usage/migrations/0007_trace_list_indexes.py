"""The trace lists' indexes in their order, ``(key or tenant, created_at DESC, id DESC)``, in
place of ``(key or tenant, created_at DESC)`` and the foreign keys' own indexes, which they
make redundant: two indexes fewer on every trace written.

Not atomic: on PostgreSQL the indexes are built and dropped ``CONCURRENTLY``, so the proxy
keeps writing traces meanwhile (a plain CREATE INDEX would block its inserts for as long as
the build of a many-million-row index takes). If a concurrent build fails it leaves an
invalid index behind: drop it and run the migration again."""

from django.db import migrations, models

from config.online_indexes import AddIndexOnline, RemoveIndexOnline


class DropForeignKeyIndexOnline(migrations.AlterField):
    """``db_index=False`` on a foreign key: on PostgreSQL its index goes CONCURRENTLY (by
    the name Django gave it); elsewhere as AlterField does it."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        model = from_state.apps.get_model(app_label, self.model_name)
        column = model._meta.get_field(self.name).column
        name = schema_editor._create_index_name(model._meta.db_table, [column], suffix="")
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {schema_editor.quote_name(name)}")
        return None

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        model = to_state.apps.get_model(app_label, self.model_name)
        field = model._meta.get_field(self.name)
        name = schema_editor._create_index_name(model._meta.db_table, [field.column], suffix="")
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {schema_editor.quote_name(name)} "
            f"ON {schema_editor.quote_name(model._meta.db_table)} "
            f"({schema_editor.quote_name(field.column)})"
        )
        return None


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ("usage", "0006_usage_day_levels"),
    ]

    operations = [
        AddIndexOnline(
            model_name="trace",
            index=models.Index(
                fields=["client_key", "-created_at", "-id"], name="usage_trace_key_newest"
            ),
        ),
        AddIndexOnline(
            model_name="trace",
            index=models.Index(
                fields=["tenant", "-created_at", "-id"], name="usage_trace_tenant_newest"
            ),
        ),
        RemoveIndexOnline(model_name="trace", name="proxy_trace_client__b74298_idx"),
        RemoveIndexOnline(model_name="trace", name="proxy_trace_tenant__b232c4_idx"),
        DropForeignKeyIndexOnline(
            model_name="trace",
            name="client_key",
            field=models.ForeignKey(
                db_index=False,
                on_delete=models.deletion.CASCADE,
                related_name="traces",
                to="keys.clientkey",
            ),
        ),
        DropForeignKeyIndexOnline(
            model_name="trace",
            name="tenant",
            field=models.ForeignKey(
                db_index=False,
                on_delete=models.deletion.CASCADE,
                related_name="+",
                to="accounts.tenant",
            ),
        ),
    ]
