# Reference values for fusion.stats and fusion.learn, computed once with R and committed.
#
#   Rscript tests/reference/reference.R
#
# Needs R with pROC and glmnet (Debian: r-base-core r-cran-proc r-cran-glmnet). Reads
# data.csv, unpaired.csv and lasso.csv (written by make_data.py) and writes
# r_values.csv (name, value), r_logistic.csv, r_lasso_cv.csv and r_lasso_coef.csv.
suppressMessages({
  library(pROC)
  library(glmnet)
})
args <- commandArgs(trailingOnly = FALSE)
here <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", args, value = TRUE))))
num <- function(x) sprintf("%.17g", x)
values <- list()
put <- function(name, value) values[[name]] <<- unname(as.numeric(value))

d <- read.csv(file.path(here, "data.csv"))
roc_a <- roc(d$y, d$score_a, levels = c(0, 1), direction = "<", quiet = TRUE)
roc_b <- roc(d$y, d$score_b, levels = c(0, 1), direction = "<", quiet = TRUE)
for (name in c("a", "b")) {
  r <- if (name == "a") roc_a else roc_b
  put(paste0("auc_", name), auc(r))
  put(paste0("se_", name), sqrt(var(r, method = "delong")))
  for (level in c(0.95, 0.9)) {
    ci <- ci.auc(r, method = "delong", conf.level = level)
    put(sprintf("ci_low_%s_%g", name, level), ci[1])
    put(sprintf("ci_high_%s_%g", name, level), ci[3])
  }
}
for (alternative in c("two.sided", "greater", "less")) {
  t <- roc.test(roc_a, roc_b, method = "delong", paired = TRUE, alternative = alternative)
  put(paste0("paired_z_", alternative), t$statistic)
  put(paste0("paired_p_", alternative), t$p.value)
  if (alternative == "two.sided") {
    put("paired_ci_low", t$conf.int[1])
    put("paired_ci_high", t$conf.int[2])
  }
}
u <- read.csv(file.path(here, "unpaired.csv"))
roc_u <- roc(u$y, u$score, levels = c(0, 1), direction = "<", quiet = TRUE)
t <- roc.test(roc_a, roc_u, method = "delong", paired = FALSE)
put("unpaired_statistic", t$statistic)
put("unpaired_df", t$parameter)
put("unpaired_p", t$p.value)
put("auc_unpaired", auc(roc_u))

# calibration: y ~ logit(p) for intercept and slope; y ~ offset(logit(p)) for CITL
lp <- qlogis(d$prob)
fit <- glm(d$y ~ lp, family = binomial)
citl <- glm(d$y ~ 1 + offset(lp), family = binomial)
put("cal_intercept", coef(fit)[1])
put("cal_slope", coef(fit)[2])
put("cal_citl", coef(citl)[1])
put("cal_brier", mean((d$prob - d$y)^2))

# Hosmer-Lemeshow as ResourceSelection::hoslem.test 0.3-6 (not packaged for Debian):
# unique type-7 quantile breaks, cut(include.lowest = TRUE), df = groups formed - 2
hoslem <- function(y, yhat, g = 10) {
  breaks <- unique(quantile(yhat, probs = seq(0, 1, 1 / g)))
  groups <- cut(yhat, breaks = breaks, include.lowest = TRUE)
  observed <- xtabs(cbind(y0 = 1 - y, y1 = y) ~ groups)
  expected <- xtabs(cbind(yhat0 = 1 - yhat, yhat1 = yhat) ~ groups)
  statistic <- sum((observed - expected)^2 / expected)
  df <- length(unique(groups)) - 2
  c(statistic = statistic, df = df, p = 1 - pchisq(statistic, df))
}
for (g in c(10, 5)) {
  hl <- hoslem(d$y, d$prob, g)
  put(sprintf("hl_statistic_%d", g), hl["statistic"])
  put(sprintf("hl_df_%d", g), hl["df"])
  put(sprintf("hl_p_%d", g), hl["p"])
}
# ties: probabilities on a coarse grid merge quantile groups
coarse <- round(d$prob, 1)
hl <- hoslem(d$y, coarse, 10)
put("hl_coarse_statistic", hl["statistic"])
put("hl_coarse_df", hl["df"])
put("hl_coarse_p", hl["p"])

write.csv(data.frame(name = names(values), value = num(unlist(values))),
          file.path(here, "r_values.csv"), row.names = FALSE, quote = FALSE)

# multivariable logistic regression, Wald intervals (confint.default)
d$sex <- relevel(factor(d$sex), ref = "female")
d$site <- factor(d$site)
m <- glm(y ~ age + sex + site + smoker + glucose, data = d, family = binomial)
co <- summary(m)$coefficients
ci <- confint.default(m)
write.csv(data.frame(term = rownames(co), coef = num(co[, 1]), se = num(co[, 2]),
                     odds_ratio = num(exp(co[, 1])), ci_low = num(exp(ci[, 1])),
                     ci_high = num(exp(ci[, 2])), p_value = num(co[, 4])),
          file.path(here, "r_logistic.csv"), row.names = FALSE, quote = FALSE)

# LASSO: cv.glmnet with fixed folds and a fixed lambda grid, standardised inputs
L <- read.csv(file.path(here, "lasso.csv"))
X <- as.matrix(L[, grep("^x", names(L))])
grid <- exp(seq(log(0.3), log(0.003), length.out = 30))
cv <- cv.glmnet(X, L$y, family = "binomial", lambda = grid, foldid = L$foldid,
                standardize = FALSE, type.measure = "deviance", thresh = 1e-14,
                maxit = 1e7)
write.csv(data.frame(lambda = num(cv$lambda), cvm = num(cv$cvm), cvsd = num(cv$cvsd),
                     nzero = cv$nzero,
                     is_min = cv$lambda == cv$lambda.min, is_1se = cv$lambda == cv$lambda.1se),
          file.path(here, "r_lasso_cv.csv"), row.names = FALSE, quote = FALSE)
coefs <- cbind(as.matrix(coef(cv, s = "lambda.min")), as.matrix(coef(cv, s = "lambda.1se")))
write.csv(data.frame(term = rownames(coefs), lambda_min = num(coefs[, 1]),
                     lambda_1se = num(coefs[, 2])),
          file.path(here, "r_lasso_coef.csv"), row.names = FALSE, quote = FALSE)
