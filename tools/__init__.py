"""What the top-level commands share: their argument groups and one-line-error tail (cli), the policy
loop (rollout), evaluation (evaluate), jumps (jumps), video (video) and plots (plots). Commands import
this package; nothing here imports a command."""
