"""Helpers the tests share: servers, log capture, waiting, the job-queue apps, the docs runner."""
