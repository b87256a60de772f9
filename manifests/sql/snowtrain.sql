-- snowtrain's tables in Snowflake: the SQL front door's request table, the run history and
-- a Cortex-like DESCRIBE of a run. Run once as an admin (README: "The SQL front door").
-- Database and schema: SNOWTRAIN.PUBLIC here; the chart's sqlFrontDoor.database / .schema
-- must name the same.

CREATE DATABASE IF NOT EXISTS SNOWTRAIN;
CREATE SCHEMA IF NOT EXISTS SNOWTRAIN.PUBLIC;

-- One row per request to fine-tune. Analysts insert the first columns; the bridge answers
-- in STATUS (ACCEPTED or REFUSED), JOB_NAME and MESSAGE, once.
CREATE TABLE IF NOT EXISTS SNOWTRAIN.PUBLIC.FINETUNE_REQUESTS (
    REQUEST_ID VARCHAR DEFAULT UUID_STRING(),  -- idempotency: one job per request, ever
    BASE_MODEL VARCHAR NOT NULL,                -- a name the admin's template allows
    TRAINING_DATA VARCHAR NOT NULL,             -- [DATABASE.][SCHEMA.]TABLE
    EPOCHS NUMBER DEFAULT 3,
    MODEL_NAME VARCHAR,                         -- the FineTuneJob's name (default: from the id)
    REQUESTED_BY VARCHAR DEFAULT CURRENT_USER(),
    REQUESTED_AT TIMESTAMP_LTZ DEFAULT CURRENT_TIMESTAMP(),
    STATUS VARCHAR,                             -- NULL until answered: ACCEPTED | REFUSED
    JOB_NAME VARCHAR,
    MESSAGE VARCHAR,
    ANSWERED_AT TIMESTAMP_LTZ
);

-- One row per FineTuneJob / PretrainJob / BatchPrediction the bridge has seen, kept current
-- while it exists and kept (DELETED_AT set) after it is deleted.
CREATE TABLE IF NOT EXISTS SNOWTRAIN.PUBLIC.RUNS (
    UID VARCHAR NOT NULL,                       -- the resource's uid (a re-created one is another run)
    KIND VARCHAR,
    NAMESPACE VARCHAR,
    NAME VARCHAR,
    REQUEST_ID VARCHAR,                         -- set when the front door created it
    PHASE VARCHAR,
    PROGRESS_PERCENT FLOAT,
    METRICS VARIANT,                            -- trainLoss, evalLoss, evalAccuracy, ... (or rows)
    DATA_ROWS NUMBER,
    DATA_QUERY_ID VARCHAR,
    DATA_FINGERPRINT VARCHAR,
    MODEL_URI VARCHAR,
    MODEL_STAGE VARCHAR,
    FAILURE_REASON VARCHAR,
    FAILURE_MESSAGE VARCHAR,
    STARTED_AT TIMESTAMP_NTZ,
    ENDED_AT TIMESTAMP_NTZ,
    CREATED_AT TIMESTAMP_NTZ,
    UPDATED_AT TIMESTAMP_NTZ,
    DELETED_AT TIMESTAMP_NTZ,
    SPEC VARIANT,
    STATUS VARIANT                              -- the whole status, as kubectl shows it
);

-- SELECT DESCRIPTION FROM SNOWTRAIN.PUBLIC.RUN_DESCRIPTIONS WHERE ID = 'ml/sentiment';
-- the shape of Cortex's FINETUNE('DESCRIBE', ...) answer.
CREATE OR REPLACE VIEW SNOWTRAIN.PUBLIC.RUN_DESCRIPTIONS AS
SELECT
    NAMESPACE || '/' || NAME AS ID,
    UID,
    OBJECT_CONSTRUCT(
        'id', NAMESPACE || '/' || NAME,
        'kind', KIND,
        'status', PHASE,
        'base_model', SPEC:baseModel:uri,
        'training_data', COALESCE(SPEC:data:table, SPEC:input:table),
        'created_on', CREATED_AT,
        'finished_on', ENDED_AT,
        'progress', PROGRESS_PERCENT,
        'trained_tokens', METRICS:tokensTrained,
        'training_result', OBJECT_CONSTRUCT(
            'training_loss', METRICS:trainLoss,
            'validation_loss', METRICS:evalLoss,
            'validation_accuracy', METRICS:evalAccuracy
        ),
        'model', MODEL_URI,
        'error', OBJECT_CONSTRUCT('reason', FAILURE_REASON, 'message', FAILURE_MESSAGE),
        'deleted_on', DELETED_AT
    ) AS DESCRIPTION
FROM SNOWTRAIN.PUBLIC.RUNS;

-- Grants (a role for analysts, one for the bridge; names are examples):
--   GRANT USAGE ON DATABASE SNOWTRAIN TO ROLE ANALYST;
--   GRANT USAGE ON SCHEMA SNOWTRAIN.PUBLIC TO ROLE ANALYST;
--   GRANT INSERT, SELECT ON TABLE SNOWTRAIN.PUBLIC.FINETUNE_REQUESTS TO ROLE ANALYST;
--   GRANT SELECT ON TABLE SNOWTRAIN.PUBLIC.RUNS TO ROLE ANALYST;
--   GRANT SELECT ON VIEW SNOWTRAIN.PUBLIC.RUN_DESCRIPTIONS TO ROLE ANALYST;
--   GRANT USAGE ON DATABASE SNOWTRAIN TO ROLE SNOWTRAIN_BRIDGE;
--   GRANT USAGE ON SCHEMA SNOWTRAIN.PUBLIC TO ROLE SNOWTRAIN_BRIDGE;
--   GRANT SELECT, UPDATE ON TABLE SNOWTRAIN.PUBLIC.FINETUNE_REQUESTS TO ROLE SNOWTRAIN_BRIDGE;
--   GRANT SELECT, INSERT, UPDATE ON TABLE SNOWTRAIN.PUBLIC.RUNS TO ROLE SNOWTRAIN_BRIDGE;
-- The jobs themselves read the training data with their own Secret (the template's), not the
-- bridge's: the bridge's role needs no access to it.
