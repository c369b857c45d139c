# psych::ICC reference values for fusion.stats.icc, computed once and committed.
#
#   python tests/reference/make_icc_data.py && Rscript tests/reference/icc.R
#
# Needs R with psych (Debian: r-base-core r-cran-psych). Reads icc_data.csv (case,
# rater, f0..f2 in long form) and writes r_icc.csv: per feature and type (ICC1, ICC3)
# the ICC, its lower and upper bound at alpha = 0.05, F and p, as psych::ICC reports.
suppressMessages(library(psych))
args <- commandArgs(trailingOnly = FALSE)
here <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", args, value = TRUE))))
d <- read.csv(file.path(here, "icc_data.csv"))
out <- list()
for (feature in c("f0", "f1", "f2")) {
  wide <- reshape(d[, c("case", "rater", feature)], idvar = "case", timevar = "rater",
                  direction = "wide")
  r <- ICC(as.matrix(wide[, -1]), alpha = 0.05, lmer = FALSE)$results
  for (type in c("ICC1", "ICC3")) {
    row <- r[r$type == type, ]
    out[[length(out) + 1]] <- data.frame(feature = feature, type = type, icc = row$ICC,
                                         ci_low = row$`lower bound`, ci_high = row$`upper bound`,
                                         f = row$F, p = row$p)
  }
}
write.csv(do.call(rbind, out), file.path(here, "r_icc.csv"), row.names = FALSE)
