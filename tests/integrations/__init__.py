"""Tests of the job-queue and observability integrations (``aioreqctx.integrations``)."""
