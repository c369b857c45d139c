# Calibration, reclassification and Youden references, computed once with R and committed.
#
#   Rscript tests/reference/calibration.R
#
# Needs R with rms (and Hmisc, which it loads) and pROC (Debian: r-base-core r-cran-rms
# r-cran-proc). Reads calibration.csv (make_calibration_data.py) and data.csv
# (make_data.py); writes
#   r_val_prob.csv      rms::val.prob of p_old, p_new and p_tied (name, column, value)
#   r_improve_prob.csv  Hmisc::improveProb(p_old, p_new, y) and (p_new, p_tied, y)
#   r_youden.csv        pROC's coords(roc, "best", best.method = "youden") thresholds
suppressMessages({
  library(rms)
  library(pROC)
})
args <- commandArgs(trailingOnly = FALSE)
here <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", args, value = TRUE))))
num <- function(x) sprintf("%.17g", x)

d <- read.csv(file.path(here, "calibration.csv"))
rows <- list()
for (column in c("p_old", "p_new", "p_tied")) {
  v <- val.prob(d[[column]], d$y, pl = FALSE)
  rows[[column]] <- data.frame(column = column, name = names(v), value = num(unname(v)))
}
write.csv(do.call(rbind, rows), file.path(here, "r_val_prob.csv"), row.names = FALSE,
          quote = FALSE)

rows <- list()
for (pair in list(c("p_old", "p_new"), c("p_new", "p_tied"))) {
  r <- improveProb(d[[pair[1]]], d[[pair[2]]], d$y)
  keep <- sapply(r, is.numeric)
  rows[[paste(pair, collapse = ">")]] <- data.frame(
    old = pair[1], new = pair[2], name = names(r)[keep], value = num(unlist(r[keep])))
}
write.csv(do.call(rbind, rows), file.path(here, "r_improve_prob.csv"), row.names = FALSE,
          quote = FALSE)

# the strictest of pROC's best Youden thresholds (direction "<": positive when higher)
youden <- function(y, x) {
  r <- roc(y, x, levels = c(0, 1), direction = "<", quiet = TRUE)
  best <- coords(r, "best", best.method = "youden", ret = "threshold", transpose = FALSE)
  max(best$threshold)
}
a <- read.csv(file.path(here, "data.csv"))
out <- data.frame(
  data = c("data.csv", "data.csv", "calibration.csv", "calibration.csv"),
  column = c("score_a", "score_b", "p_new", "p_tied"),
  threshold = num(c(youden(a$y, a$score_a), youden(a$y, a$score_b),
                    youden(d$y, d$p_new), youden(d$y, d$p_tied))))
write.csv(out, file.path(here, "r_youden.csv"), row.names = FALSE, quote = FALSE)
