-- 0036: each answer about a reply to an approval notice names the job that hands it on, so the
-- jobs of one message, taken by different replicas at once, each hand on an answer of their
-- own (before, each took the message's oldest answer: two replicas could mail one answer
-- twice and another never). Answers stored before have none, and go to any of their jobs.
ALTER TABLE approval_answers ADD COLUMN job_id BIGINT;
