-- Databases pgkb does not start itself, registered as RDS clusters (`pgkb db register`). Only the
-- secret's ARN is kept: host, port, user and password are read from the secret when connecting.
CREATE TABLE IF NOT EXISTS pgkb.databases (
    name          text PRIMARY KEY,              -- the cluster name in the ARN: [a-zA-Z0-9-]{1,63}
    resource_arn  text NOT NULL UNIQUE,          -- arn:aws:rds:<region>:<account>:cluster:<name>
    secret_arn    text NOT NULL,
    database_name text NOT NULL,
    description   text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
