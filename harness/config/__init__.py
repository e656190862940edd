"""The configuration: ``compose`` composes each job's config once (derived configs for jobs that differ
in plain values), ``checks`` refuses a bad config in one line before anything is built or written."""
