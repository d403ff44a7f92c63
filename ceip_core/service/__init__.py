"""The receiving service (``ceip serve``): takes batches from machines, stores each report once, answers queries
and serves the dashboard.

The modules read like the path of a report:
- ``app``: the aiohttp application factory and its handlers (the HTTP contract, docs/wire-format.md "HTTP");
- ``limits``: body reading with incremental inflation (gzip bombs), the item limit, and the rate limiters
  per machine and per connection source;
- ``validation``: per-item checks beyond the wire schema (allowlist, ranges, timestamps, string limits);
- ``ingest``: body to per-item results, shared by the HTTP handlers and ``ceip import``;
- ``groupcommit``: many requests' writes in one transaction, acknowledged only after the commit;
- ``storage``, ``sqlite_store``, ``postgres_store``: one small storage interface, two real databases;
- ``rollups``: the aggregates that queries read instead of raw reports, and ``reach``: distinct machines over
  any range of days without counting machines at query time;
- ``queries``: problems, trends, feature adoption, configuration, timings, participation and versions, with
  k-anonymity: one implementation for the query API, ``ceip report`` and the dashboard;
- ``dashboard``, ``panels``, ``charts``, ``sessions``: the HTML dashboard, its login and server-side SVG charts;
- ``config``, ``auth``, ``serve``: the allowlist and policy, the query token, processes and sockets.
"""
