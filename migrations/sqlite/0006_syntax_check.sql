-- What `POST /api/v1/requests/check` found in each revision's content when it was saved
-- (JSON; NULL when no check could be made, e.g. the sandbox was unavailable, or for revisions
-- saved before this migration).
ALTER TABLE request_revisions ADD COLUMN syntax_check TEXT;
