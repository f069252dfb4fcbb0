#!/usr/bin/perl
# The classic way, for comparison in the burst benchmark: what a
# poprelayd-style hook does per login. Ties the map with DB_File, takes
# flock(LOCK_EX) on its descriptor, stores IP => time in place, syncs.
# Usage: IP=192.0.2.7 poprelayd-style.pl /path/popip.db
use strict;
use warnings;
use DB_File;
use Fcntl qw(:flock O_RDWR);

my ($map) = @ARGV;
my $ip = $ENV{IP} // die "no IP\n";
my $db = tie(my %h, 'DB_File', $map, O_RDWR, 0644, $DB_HASH) or die "tie $map: $!\n";
open(my $fh, '+<&', $db->fd) or die "fd: $!\n"; # a dup: the same open file, so the same lock
flock($fh, LOCK_EX) or die "flock: $!\n";
$h{$ip} = time;
$db->sync;
flock($fh, LOCK_UN);
close($fh);
undef $db;
untie %h;
