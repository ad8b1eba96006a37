/*
 * rf_test.h — the smallest test harness that does the job: CHECK macros that count and
 * report failures with file:line, and RF_TEST_MAIN to run a list of test functions and exit
 * non-zero when any check failed. No network, no globals beyond the counters.
 */
#ifndef RF_TEST_H
#define RF_TEST_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int rf_test_failures;
static int rf_test_checks;

#define CHECK(cond)                                                               \
    do {                                                                          \
        rf_test_checks++;                                                         \
        if (!(cond)) {                                                            \
            rf_test_failures++;                                                   \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                         \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                \
    do {                                                                                  \
        long long rf_a_ = (long long)(a), rf_b_ = (long long)(b);                         \
        rf_test_checks++;                                                                 \
        if (rf_a_ != rf_b_) {                                                             \
            rf_test_failures++;                                                           \
            fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, \
                    #a, #b, rf_a_, rf_b_);                                                \
        }                                                                                 \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                                \
    do {                                                                                  \
        const char *rf_a_ = (a), *rf_b_ = (b);                                            \
        rf_test_checks++;                                                                 \
        if (!rf_a_ || !rf_b_ || strcmp(rf_a_, rf_b_) != 0) {                              \
            rf_test_failures++;                                                           \
            fprintf(stderr, "%s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__, \
                    #a, #b, rf_a_ ? rf_a_ : "(null)", rf_b_ ? rf_b_ : "(null)");          \
        }                                                                                 \
    } while (0)

/* |a - b| <= rel * max(|a|, |b|) + abs_tol */
#define CHECK_NEAR(a, b, rel, abs_tol)                                                   \
    do {                                                                                 \
        double rf_a_ = (a), rf_b_ = (b);                                                 \
        double rf_m_ = fabs(rf_a_) > fabs(rf_b_) ? fabs(rf_a_) : fabs(rf_b_);            \
        rf_test_checks++;                                                                \
        if (!(fabs(rf_a_ - rf_b_) <= (rel) * rf_m_ + (abs_tol))) {                       \
            rf_test_failures++;                                                          \
            fprintf(stderr, "%s:%d: %s ~= %s failed: %.17g vs %.17g\n", __FILE__, __LINE__, \
                    #a, #b, rf_a_, rf_b_);                                               \
        }                                                                                \
    } while (0)

typedef void (*rf_test_fn)(void);
struct rf_test_case {
    const char *name;
    rf_test_fn fn;
};

#define RF_TEST(fn) {#fn, fn}

#define RF_TEST_MAIN(...)                                                                 \
    int main(void) {                                                                      \
        static const struct rf_test_case cases[] = {__VA_ARGS__};                         \
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {                     \
            int before = rf_test_failures;                                                \
            cases[i].fn();                                                                \
            fprintf(stderr, "%s %s\n", rf_test_failures == before ? "ok  " : "FAIL",      \
                    cases[i].name);                                                       \
        }                                                                                 \
        fprintf(stderr, "%d checks, %d failed\n", rf_test_checks, rf_test_failures);      \
        return rf_test_failures ? 1 : 0;                                                  \
    }

#endif
