/* The brewery demo's --plot: a request timeline per mode, drawn by gnuplot
 * as DIR/timeline-MODE.png (with the data, DIR/timeline-MODE.dat, and the
 * script, DIR/timeline-MODE.gp, beside it for whoever wants to redraw it).
 * One row per state, one bar per request from its start to its answer, so
 * the serial staircase and the async overlap show at a glance. */
#ifndef BREWERY_CLIENT_PLOT_H
#define BREWERY_CLIENT_PLOT_H

#include <stddef.h>
#include <stdint.h>
#include "client-modes.h"

/* Before any request: checks that gnuplot is on PATH, makes DIR if it is
 * missing (one level), and checks that a file can be created in it.  Returns 0, or -1
 * with a message on stderr. */
int client_plot_check(const char *dir);

/* Draws one mode's timeline from counts[0..n) (their spans), with times
 * relative to t0 (async_now() when the mode started) and the mode's
 * duration in the title.  Returns 0, or -1 with a message on stderr
 * (gnuplot's own messages go to stderr as it prints them). */
int client_plot_timeline(const char *dir, const char *mode, const char *const *states,
                         size_t n, const client_count_t *counts, int64_t t0, double seconds);

#endif
