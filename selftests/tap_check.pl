#!/usr/bin/perl
# SPDX-License-Identifier: GPL-2.0
#
# Is a test run's output (selftests/run_tests.sh) one valid TAP stream?
# Read by Perl's own TAP consumer (TAP::Parser, what prove uses):
#   - TAP version 13 first, one plan, as many results as it plans, numbered
#     in order, no parse error;
#   - then, last, the line "N passed, N failed, N skipped", whose numbers
#     are the stream's own: ok without a directive, not ok, SKIP or TODO.
#
#   tap_check.pl FILE   exit 0 if so, else 1 with what is wrong on stderr
use strict;
use warnings;
use TAP::Parser;

my $file = shift or die "usage: tap_check.pl FILE\n";
open(my $fh, '<', $file) or die "tap_check: $file: $!\n";
my @lines = <$fh>;
close $fh;
my $tap = join '', @lines;
my @problems;

my $parser = TAP::Parser->new({ tap => $tap, version => 13 });
my ($plans, $pass, $fail, $skip) = (0, 0, 0, 0);
while (my $r = $parser->next) {
	$plans++ if $r->is_plan;
	next unless $r->is_test;
	if ($r->has_skip || $r->has_todo) {
		$skip++;
	} elsif ($r->is_actual_ok) {
		$pass++;
	} else {
		$fail++;
	}
}
push @problems, "parse error: $_" for $parser->parse_errors;
push @problems, "not TAP version 13 (" . $parser->version . ")"
	unless $parser->version == 13;
push @problems, "$plans plans, not one" unless $plans == 1;
push @problems, "planned " . ($parser->tests_planned // 'nothing') .
	", ran " . $parser->tests_run unless $parser->is_good_plan;

my $last = $lines[-1] // '';
chomp $last;
if ($last =~ /^(\d+) passed, (\d+) failed, (\d+) skipped$/) {
	push @problems, "the summary says $1 passed, $2 failed, $3 skipped; " .
		"the stream has $pass, $fail, $skip"
		unless $1 == $pass && $2 == $fail && $3 == $skip;
} else {
	push @problems, "the last line is not 'N passed, N failed, N skipped': '$last'";
}

exit 0 unless @problems;
print STDERR "tap_check: $file: $_\n" for @problems;
exit 1;
