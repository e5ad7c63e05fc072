-- Velocity checks: a player whose orders or declines come too fast is flagged for review; new
-- orders wait until an operator clears the flag.
alter table player add column flagged_at bigint;
alter table player add column flag_reason text;
