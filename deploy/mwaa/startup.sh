#!/bin/bash
# Amazon MWAA startup script for the EMM SDC (docs/mwaa.md): MWAA runs it on every scheduler, worker and web server
# container before Airflow starts, and keeps the variables it exports. Only settings live here: connections come
# from AWS Secrets Manager (the environment's secrets.backend options), never from this file.
# Example account 123456789012 and region eu-west-1 stand for yours.

# The bucket's dags/ folder is the project root: dags/*.py, include/ (ITF YAMLs, sdc.yaml, SQL), processors/.
export EMM_PROJECT_ROOT=/usr/local/airflow/dags
export EMM_ENVIRONMENT=production
export EMM_INBOX_BUCKET=emm-sdc-inbox
export EMM_ARCHIVE_BUCKET=emm-sdc-archive
export EMM_PUBLIC_BUCKET=emm-sdc-public
export EMM_AWS_CONN_ID=emm_s3
export EMM_CATALOG_CONN_ID=emm_catalog
# Containers share no disk on MWAA: job folders and kernels are per container (a worker that lacks a kernel fetches
# it from the archive), and the last-good copies of the YAMLs are per container too, so the fallback to them is
# inert here; scripts/build-mwaa-plugins refuses to build with an invalid YAML instead.
export EMM_WORK_DIR=/tmp/emm-sdc-work
export EMM_KERNEL_DIR=/tmp/emm-sdc-kernels
export EMM_LAST_GOOD_DIR=/tmp/emm-sdc-last-good-configs
# Inbox S3 events -> SQS emm-sdc-inbox-<exi|emu|emr|spice> -> AssetWatchers in the triggerer.
export EMM_INBOX_QUEUE_URL_PREFIX=https://sqs.eu-west-1.amazonaws.com/123456789012/
export EMM_RELEASE_LAG_MONTHS=4
# MWAA's Celery workers serve only its default queue: keep every task there (no lane queues; pools still apply).
export EMM_LANE_QUEUES=off
export AWS_DEFAULT_REGION=eu-west-1
