"""The run history: every run's results in a database (SQLite by default, PostgreSQL for a
fleet), change points found in each series (combination x figure x machine id).

``store`` owns the schema and the connection, ``ingest`` turns results.json into rows,
``changes`` finds steps, ``provenance`` records which commit and CI job a run was.
SQLAlchemy and ruptures are imported only here: ``import infergate`` never needs them.
"""
