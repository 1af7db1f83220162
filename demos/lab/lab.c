/* lab: the parallel-processing lab's CPU workloads, each run serially, on
 * threads and on processes (and, under mpirun with --mode mpi, on MPI
 * ranks), timed, compared, and checked to agree exactly;
 * `lab all` runs everything and writes the notebook's soln.json and the
 * report of every figure, lab-report.json.  See docs/lab.md. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "async/executor.h"
#include "common/lab.h"

static const struct workload {
    const char *name;
    int (*run)(void);
    bool data; /* takes --input/--output */
    bool plot; /* draws charts with --plot */
    bool mpi;  /* runs over MPI ranks with --mode mpi */
    const char *what;
} workloads[] = {
    {"howmany", lab_howmany, true, false, true, "count per row the values in [4, 8] (1,000,000 x 5)"},
    {"common", lab_common, true, false, true, "row-wise common items of list_a and list_b"},
    {"busywork", lab_busywork, false, false, true, "tasks of 1, 2, 4, 6 s: serial, pool of CPUs, pool of 4"},
    {"normalize", lab_normalize, true, false, true, "min-max normalise rows, Small to XXL"},
    {"primes", lab_primes, false, false, true, "count the primes below 100,000"},
    {"factors", lab_factors, false, false, true, "prime factors of 100 numbers in [1e10, 1e12]"},
    {"sumsq", lab_sumsq, false, false, true, "sum of i^2, 8 tasks of n = 1,000,000"},
    {"heavy", lab_heavy, false, false, true, "(sin x + cos x)^(x*x) over 40,000,000 doubles, 3 passes"},
    {"chunks", lab_chunks, false, true, true, "x*x over 100,000 items for chunk sizes 1 to 10,000"},
    {"workers", lab_workers, false, true, true, "1 to 2 x CPUs workers, with the Amdahl fit"},
    {"pairs", lab_pairs, false, false, true, "the lecture's (x + y) ** 2 over 1,000,000 pairs: starmap, async, vectorised"},
    {"files", lab_files, false, false, true, "create_and_save_file through apply, apply_async, map, map_async, starmap"},
    {"scheduler", lab_scheduler, false, false, true, "a priority task scheduler: priorities, timeouts, failures, summary"},
};
#define NWORK (sizeof workloads / sizeof workloads[0])

static void usage(FILE *f)
{
    fprintf(f, "usage: lab WORKLOAD [options]\n\nworkloads:\n");
    for (size_t i = 0; i < NWORK; i++) fprintf(f, "  %-10s %s\n", workloads[i].name, workloads[i].what);
    fprintf(f, "  %-10s %s\n", "all", "every workload above, then soln.json and lab-report.json");
    fprintf(f, "  %-10s %s\n", "data", "the generated data's first values and digests (to check against numpy)");
    fprintf(f, "  %-10s %s\n", "repr", "repr X...: each number as Python's repr prints it (soln.json's floats)");
    fprintf(f, "\noptions:\n"
               "  --mode M       serial, threads, processes, mpi, or all (= serial,threads,processes;\n"
               "                 the default), or a list such as serial,mpi; mpi runs under\n"
               "                 mpirun -np N (N >= 2) and covers every workload\n"
               "                 (docs/lab.md)\n"
               "  --workers N    pool size for threads and processes (default: the CPU count)\n"
               "  --scale F      multiply sizes and durations by F (default 1)\n"
               "  --quick        the same as --scale 0.1\n"
               "  --seed S       seed in [0, 2^32) for every generated data set (default: the\n"
               "                 notebooks' seeds, 42 for normalize and 100 for howmany,\n"
               "                 and 20240917 for the others)\n"
               "  --input FILE   read the rows from CSV (howmany, common, normalize)\n"
               "  --output FILE  write the results as CSV (howmany, common, normalize)\n"
               "  --plot DIR     write PNG charts into DIR with gnuplot (chunks, workers)\n"
               "  --soln FILE    write the notebook's answers as JSON (default for all: soln.json)\n"
               "  --report FILE  every other figure as JSON (default: lab-report.json beside\n"
               "                 the soln file)\n"
               "  --repeat N     time each run N times and keep the best (default 1;\n"
               "                 runs under 0.1 s are always timed 5 times)\n"
               "  --help         this text\n");
}

/* A bad command line: the message, and exit status 2 as for a usage error
 * (a run that fails exits 1). */
static void __attribute__((format(printf, 1, 2), noreturn)) bad(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("lab: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (try --help)\n", stderr);
    va_end(ap);
    exit(2);
}

static double number(const char *opt, const char *s, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || !(v >= lo && v <= hi)) bad("%s: \"%s\" is not a number in [%g, %g]", opt, s, lo, hi);
    return v;
}

/* A whole number in decimal digits: "2.5", "1e3", "0x10", " 4" and "+4"
 * are refused rather than truncated or read in another base. */
static unsigned long long whole(const char *opt, const char *s, unsigned long long lo, unsigned long long hi)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s < '0' || *s > '9' || *end || errno || v < lo || v > hi)
        bad("%s: \"%s\" is not a whole number in [%llu, %llu]", opt, s, lo, hi);
    return v;
}

/* --mode's value: one mode, all, or a comma-separated list of them. */
static unsigned modes(const char *arg)
{
    unsigned m = 0;
    const char *p = arg;
    for (;;) {
        size_t len = strcspn(p, ",");
        unsigned bit = 0;
        if (len == 3 && !strncmp(p, "all", 3)) bit = 7;
        for (lab_mode_t k = 0; k < LAB_NMODES && !bit; k++)
            if (strlen(lab_mode_name[k]) == len && !strncmp(p, lab_mode_name[k], len)) bit = 1u << k;
        if (!bit) bad("--mode: \"%s\" is not serial, threads, processes, mpi, all or a list of them", arg);
        m |= bit;
        if (!p[len]) return m;
        p += len + 1;
    }
}

/* The pool size to start rank pools for (lab_mpi_start), or 0.  The
 * scheduler's timeouts must kill a task running past them, which only a
 * serving rank's process pool can, so a run of it (or of `all`) starts them
 * on every rank, its pool of --workers tasks spread over them.  The other
 * workloads of `all` then run in those pools too: a rank forks its pool
 * again when replicated input arrives (lib/mpi/serve.c), so the workers
 * hold it. */
static unsigned rank_pool(const char *workload)
{
    return !strcmp(workload, "scheduler") || !strcmp(workload, "all") ? lab_opt.workers : 0;
}

/* Whether writing a would replace b: one file, and a regular one (or not
 * there yet); /dev/null or /dev/stdout twice replaces nothing. */
static bool clobbers(const char *a, const char *b)
{
    struct stat st;
    return lab_same_file(a, b) && (stat(a, &st) != 0 || S_ISREG(st.st_mode));
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"mode", required_argument, 0, 'm'}, {"workers", required_argument, 0, 'w'},
        {"scale", required_argument, 0, 's'}, {"quick", no_argument, 0, 'q'},
        {"seed", required_argument, 0, 'S'}, {"input", required_argument, 0, 'i'},
        {"output", required_argument, 0, 'o'}, {"plot", required_argument, 0, 'p'},
        {"soln", required_argument, 0, 'j'}, {"repeat", required_argument, 0, 'r'},
        {"report", required_argument, 0, 'R'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    /* As Python ignores it at start-up: past the file size limit (ulimit
     * -f) a write fails with EFBIG, which the lab reports, instead of the
     * lab (or a pool's worker) dying of SIGXFSZ mid-workload, leaving its
     * files folder under $TMPDIR and no word why.  Workers inherit it. */
    signal(SIGXFSZ, SIG_IGN);
    /* The CPUs this process may run on, as len(os.sched_getaffinity(0)):
     * under taskset or a cpuset, mp.cpu_count()'s whole-machine count would
     * give prob2's part2 pool more workers than it can run at once. */
    lab_opt.ncpu = (int)async_cpu_count();
    lab_opt.workers = (unsigned)lab_opt.ncpu;
    int c;
    while ((c = getopt_long(argc, argv, "m:w:s:qS:i:o:p:j:r:R:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': lab_opt.modes = modes(optarg); break;
        case 'w': lab_opt.workers = (unsigned)whole("--workers", optarg, 1, 256); break;
        case 's': lab_opt.scale = number("--scale", optarg, 1e-4, 100); break;
        case 'q': lab_opt.scale = 0.1; break;
        case 'S':
            /* numpy's legacy seeding takes 0 .. 2^32 - 1. */
            lab_opt.seed = whole("--seed", optarg, 0, 4294967295ULL);
            lab_opt.seed_set = true;
            break;
        case 'i': lab_opt.input = optarg; break;
        case 'o': lab_opt.output = optarg; break;
        case 'p': lab_opt.plot_dir = optarg; break;
        case 'j': lab_opt.soln = optarg; break;
        case 'R': lab_opt.report = optarg; break;
        case 'r': lab_opt.repeat = (unsigned)whole("--repeat", optarg, 1, 100); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    /* Every rank of an MPI run read the same options; only rank 0 goes on
     * from here, the others serve chunks until it ends. */
    if (lab_want(LAB_MPI)) lab_mpi_start(&argc, &argv, rank_pool(optind < argc ? argv[optind] : ""));
    if (optind < argc && !strcmp(argv[optind], "repr")) {
        /* Python's repr of each argument, one a line: the float format of
         * soln.json, exposed so that tests compare it with python3. */
        for (int i = optind + 1; i < argc; i++) {
            char *end, buf[40];
            double x = strtod(argv[i], &end);
            if (!*argv[i] || *end) bad("repr: \"%s\" is not a number", argv[i]);
            lab_py_float(x, buf, sizeof buf);
            printf("%s\n", buf);
        }
        return 0;
    }
    if (optind == argc - 1 && !strcmp(argv[optind], "data")) return lab_data();
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    const char *name = argv[optind];
    bool all = !strcmp(name, "all");
    const struct workload *w = NULL;
    for (size_t i = 0; i < NWORK && !all; i++)
        if (!strcmp(workloads[i].name, name)) w = &workloads[i];
    if (!all && !w) bad("no workload \"%s\"", name);
    if ((lab_opt.input || lab_opt.output) && (all || !w->data))
        bad("--input and --output go with howmany, common or normalize");
    if (lab_opt.input && !*lab_opt.input) bad("--input: the file name is empty");
    if (lab_opt.plot_dir && !all && !w->plot) bad("--plot goes with chunks, workers or all (\"%s\" draws no chart)", name);
    /* Every file the run will write, before it starts. */
    const char *soln = all && !lab_opt.soln ? "soln.json" : lab_opt.soln, *why;
    char buf[4096];
    const char *report = soln ? lab_report_path(soln, buf, sizeof buf) : NULL;
    if (soln && (why = lab_unwritable(soln))) bad("--soln %s: cannot write there: %s", soln, why);
    if (report && (why = lab_unwritable(report))) bad("--report %s: cannot write there: %s", report, why);
    /* The report was written over soln.json, which was lost, with exit 0. */
    if (soln && report && lab_same_file(soln, report))
        bad("--soln %s and the report %s are one file (the report would replace the answers): give "
            "--report another name", soln, report);
    /* A --plot folder that cannot be made was found at the first chart,
     * after the workload (minutes, for `all`), with exit 1. */
    if (lab_opt.plot_dir && (why = lab_plot_unwritable(lab_opt.plot_dir)))
        bad("--plot %s: cannot write charts there: %s", lab_opt.plot_dir, why);
    if (lab_opt.output && (why = lab_unwritable(lab_opt.output)))
        bad("--output %s: cannot write there: %s", lab_opt.output, why);
    /* The results replaced the user's rows (or the answers replaced the
     * results) with exit 0, and the rows were gone. */
    if (lab_opt.output && lab_opt.input && clobbers(lab_opt.output, lab_opt.input))
        bad("--output %s and --input %s are one file (the results would replace the rows): give --output "
            "another name", lab_opt.output, lab_opt.input);
    if (lab_opt.output && soln && clobbers(lab_opt.output, soln))
        bad("--output %s and --soln %s are one file: give --output another name", lab_opt.output, soln);
    if (lab_opt.output && report && clobbers(lab_opt.output, report))
        bad("--output %s and the report %s are one file: give --output another name", lab_opt.output, report);
    setvbuf(stdout, NULL, _IOLBF, 0);
    lab_figures = json_object();
    printf("lab: %d CPUs, %u workers, scale %g, seed %llu; threads: %s; processes: %s\n", lab_opt.ncpu,
           lab_opt.workers, lab_opt.scale, (unsigned long long)lab_opt.seed, lab_backend(LAB_THREADS),
           lab_backend(LAB_PROCESSES));
    if (lab_want(LAB_MPI)) {
        printf("lab: mpi: %u serving ranks, %s", lab_mpi_workers(), lab_backend(LAB_MPI));
        unsigned rp = lab_mpi_rank_processes();
        if (rp) printf(", a pool of %u process%s on each rank", rp, rp == 1 ? "" : "es");
        printf("\n");
    }
    /* --mode mpi alone: a workload that does not run over MPI has no mode. */
    bool mpi_only = lab_opt.modes == 1u << LAB_MPI;
    if (!all && mpi_only && !w->mpi)
        bad("\"%s\" does not run over MPI (docs/lab.md)", name);
    if (all) {
        for (size_t i = 0; i < NWORK; i++) {
            if (mpi_only && !workloads[i].mpi) {
                printf("\n== %s: not run (it does not run over MPI)\n", workloads[i].name);
                continue;
            }
            workloads[i].run();
        }
        lab_soln_write(lab_opt.soln ? lab_opt.soln : "soln.json");
    } else {
        w->run();
        if (lab_opt.soln) lab_soln_write(lab_opt.soln);
    }
    lab_mpi_end();
    json_decref(lab_figures);
    json_decref(lab_prob1);
    json_decref(lab_prob2);
    json_decref(lab_prob3);
    json_decref(lab_prob2_detail);
    return 0;
}
