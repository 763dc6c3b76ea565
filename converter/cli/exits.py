"""What rkconvert's exit statuses mean, as the commands' help says it."""

EXIT_CODES = "Exit status: 0 built and within the gates, 1 build failed (toolkit crash or refusal, accuracy gate), 2 bad input."
