"""Tracking: everything that writes to MLflow, and the stop signals that decide how a run ends.

- ``uris``: checking a store before it is used (every problem with it is one line);
- ``store``: one MLflow client and store per tracking URI per process, which process a run belongs to;
- ``runs``: one run's buffered params, metrics, tags and end (``MlflowTracker``), bundles' shared flushes;
- ``sqlwrite``: a flush's metrics into a database store with one statement;
- ``fresh_store``: a new sqlite store copied from a cached empty one instead of MLflow's migrations;
- ``signals``: stop signals as one exception, deferred while a run is created or ended.
"""
