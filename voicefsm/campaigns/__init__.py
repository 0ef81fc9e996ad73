"""Outbound campaigns: a flow called over a CSV of numbers, on procrastinate (PostgreSQL) workers.

Pacing and a concurrency cap shared by every worker (kept in the database), calling windows in each
callee's time zone, retries with backoff for busy / no-answer / failed, Twilio's async answering-
machine detection, and pause / resume / cancel. Needs ``pip install 'voicefsm[campaigns]'``.
"""
