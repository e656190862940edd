"""The configuration: ``schema`` declares every knob once (default, rule from ``values``, role); ``traits``
reads a component's declared traits; ``rules`` the component knobs' ranges; ``compose`` composes each job's
config once (derived configs for jobs that differ in plain values); ``checks`` refuses a bad config in one
line before anything is built or written."""
