"""Outbound campaigns: a flow called over a CSV of numbers, on procrastinate (PostgreSQL) workers.

Pacing and a concurrency cap shared by every worker (kept in the database), calling windows in each
callee's time zone, retries with backoff for busy / no-answer / failed, Twilio's async answering-
machine detection, and pause / resume / cancel. Needs ``pip install 'voicefsm[campaigns]'``.

Why procrastinate: it is asyncio-native and PostgreSQL-only, like the records of a multi-worker
deployment, so campaigns need no second service (saq, arq and dramatiq want Redis or RabbitMQ for
anything beyond one process, and dramatiq is thread-based); it keeps delayed jobs in the database
(``schedule_at``: retries with backoff and calling windows are the queue's, not a timer of ours), runs
its worker inside the server process, has ``queueing_lock`` (one waiting dial per number), periodic
tasks (the sweep) and stalled-job recovery. It has no global concurrency limit, so the cap and the
pace are two rows of ours claimed with conditional UPDATEs (see :mod:`voicefsm.campaigns.store`);
pgqueuer's global ``concurrency_limit`` would only cap the dial job, not the call that outlives it.
"""
