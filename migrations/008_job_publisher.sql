-- 008_job_publisher.sql - an audit trail of who asked for each job: the broker user that
-- published it, as RabbitMQ validated it (the AMQP user_id property, which the broker
-- refuses unless it names the publishing connection's own user). NULL when the publisher
-- did not set user_id (older clients, jobs fanned out by the workers themselves).
ALTER TABLE job ADD COLUMN publisher text;
