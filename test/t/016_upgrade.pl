# An upgrade from the previous release, done as a DBA does it: with that release installed
# (commit BACKFILL_UPGRADE_FROM of test/common.sh, built by test/run_all.sh or
# test/on_postgresql.sh into $BACKFILL_OLD_BUILD), the extension is created and three jobs are
# left on three tables: one done, one paused with backfill_pause after its first task, and one
# held inside a task when the server is stopped (-m immediate), its shadow left behind. The
# server is stopped, this tree's library and scripts are installed, the server is started:
# before ALTER EXTENSION backfill UPDATE, no job runs (the launcher's worker pauses the held job,
# a backfill_resume of the paused one pauses it again, both saying in last_error the ALTER
# EXTENSION to run), and backfill_start,
# backfill_plan and backfill_tasks refuse, naming the ALTER EXTENSION to run; writes into the
# partition whose build was cut short still work. After the update the two jobs are resumed and
# end done with the source's data, nothing of their interrupted builds left (shadow, write
# triggers, key logs, data files); the done job's tasks are as they were; backfill_tasks shows
# the new columns. Last, a database where CREATE EXTENSION backfill installs this version afresh
# (the first release's script, then the upgrade) has the same objects as the upgraded one.
#
# The libraries and scripts are swapped in a private copy of the server's installation (its
# programs copied, every other file of its lib and share directories linked), which the test's
# server runs from; the machine's installation is never written to, so an interrupted test
# leaves nothing to restore and the other tests run with this tree's library as installed. The
# new release's files are taken from this tree (built), as its make install would install them.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BackfillTest;
use Cwd qw(abs_path);
use File::Compare qw(compare);
use File::Copy qw(copy);
use File::Path qw(make_path);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $old_build = $ENV{BACKFILL_OLD_BUILD};
die 'BACKFILL_OLD_BUILD is not set: it names the built tree of the release this test upgrades '
  . 'from (test/run_all.sh and test/on_postgresql.sh build it: git archive of the commit '
  . "BACKFILL_UPGRADE_FROM of test/common.sh, then make)\n"
  unless $old_build;
die "BACKFILL_OLD_BUILD=$old_build holds no built release (backfill.so, backfill.control)\n"
  unless -f "$old_build/backfill.so" && -f "$old_build/backfill.control";

# default_version of a control file.
sub control_version
{
	my ($file) = @_;
	my ($version) = slurp_file($file) =~ /^\s*default_version\s*=\s*'([^']+)'/m
	  or die "no default_version in $file";
	return $version;
}

# =============================================================================================
# The server, and where its installation is: the pg_config view shows the directories the
# server itself uses (for $libdir and the extension files), also for a relocated installation
# such as test/on_postgresql.sh's.
my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
max_worker_processes = 16
restart_after_crash = on
});
$node->start;
my %installed = map { split /\|/, $_, 2 } split /\n/,
  $node->safe_psql('postgres',
	q{SELECT name || '|' || setting FROM pg_config WHERE name IN ('BINDIR', 'PKGLIBDIR', 'SHAREDIR')}
  );
$node->stop;
die 'the pg_config view lacks BINDIR, PKGLIBDIR or SHAREDIR'
  unless 3 == grep { defined $installed{$_} } qw(BINDIR PKGLIBDIR SHAREDIR);
# This tree's release: the files its make install installs, from the tree (built), whatever the
# machine's installation holds.
die "this tree is not built (no backfill.so in the current directory)\n" unless -f 'backfill.so';
my @new_release = (abs_path('backfill.so'), abs_path('backfill.control'),
	map { abs_path($_) } glob('sql/backfill--*.sql'));
my $new_version = control_version('backfill.control');
my $old_version = control_version("$old_build/backfill.control");
note "upgrade from $old_version ($old_build) to $new_version (" . abs_path('.') . ')';
isnt($old_version, $new_version, "the release upgraded from is another version");

# The private installation: the three directories at the same places relative to each other
# (below their common prefix), so that the copied postgres finds its lib and share directories
# next to itself, as it finds the installed ones.
my $private = abs_path(PostgreSQL::Test::Utils::tempdir('installation'));
my $prefix = $installed{BINDIR};
for my $dir (values %installed)
{
	chop $prefix while index($dir, $prefix) != 0;
}
$prefix =~ s{[^/]*\z}{};
my %here = map { $_ => "$private/" . substr($installed{$_}, length $prefix) } keys %installed;

# Every entry of $from linked from $to, less those that $skip matches.
sub link_entries
{
	my ($from, $to, $skip) = @_;
	make_path($to);
	opendir(my $dh, $from) or die "cannot open $from: $!";
	for my $entry (readdir $dh)
	{
		next if $entry eq '.' || $entry eq '..' || $entry =~ $skip;
		symlink("$from/$entry", "$to/$entry") or die "cannot link $to/$entry: $!";
	}
	closedir $dh;
	return;
}

make_path($here{BINDIR});
opendir(my $bin, $installed{BINDIR}) or die "cannot open $installed{BINDIR}: $!";
for my $program (grep { -f "$installed{BINDIR}/$_" } readdir $bin)
{
	copy("$installed{BINDIR}/$program", "$here{BINDIR}/$program")
	  or die "cannot copy $program: $!";
	chmod((stat "$installed{BINDIR}/$program")[2] & 07777, "$here{BINDIR}/$program");
}
closedir $bin;
link_entries($installed{PKGLIBDIR}, $here{PKGLIBDIR}, qr/^backfill\.so$/);
link_entries($installed{SHAREDIR}, $here{SHAREDIR}, qr/^extension$/);
link_entries("$installed{SHAREDIR}/extension", "$here{SHAREDIR}/extension", qr/^backfill[.-]/);

# Installs a release into the private installation, as its make install would: the library and
# the control file, and the scripts, replacing those of the other release.
sub install_release
{
	my ($library, $control, @scripts) = @_;
	my $extension_dir = "$here{SHAREDIR}/extension";
	opendir(my $dh, $extension_dir) or die "cannot open $extension_dir: $!";
	my @old = grep { /^backfill[.-]/ } readdir $dh;
	closedir $dh;
	unlink(map { "$extension_dir/$_" } @old) == @old or die "cannot remove @old: $!";
	for my $file ($library, $control, @scripts)
	{
		my $dir = $file eq $library ? $here{PKGLIBDIR} : $extension_dir;
		my $to = "$dir/" . ($file =~ s{.*/}{}r);
		die "not in the private installation: $to" unless index($to, "$private/") == 0;
		unlink $to;
		copy($file, $to) or die "cannot copy $file to $to: $!";
	}
	return;
}

# The backfill.so that the postmaster has loaded (shared_preload_libraries), as a path.
sub loaded_library
{
	my ($pid) = split /\n/, slurp_file($node->data_dir . '/postmaster.pid');
	my ($path) = slurp_file("/proc/$pid/maps") =~ m{ (/\S*/backfill\.so)$}m;
	return $path // 'none';
}

# From here on, the server's programs are the private copies.
$ENV{PATH} = "$here{BINDIR}:$ENV{PATH}";
install_release("$old_build/backfill.so", "$old_build/backfill.control",
	glob("$old_build/sql/backfill--*.sql"));
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'backfill'\n");
$node->start;
is($node->safe_psql('postgres', q{SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'}),
	$here{PKGLIBDIR}, 'the server runs from the private installation');
is(loaded_library(), "$here{PKGLIBDIR}/backfill.so",
	'the server has loaded the library of the private installation');
is(compare(loaded_library(), "$old_build/backfill.so"),
	0, "that library is release ${old_version}'s");

# =============================================================================================
# 1. Release 1.0: the extension, and three jobs.
$node->safe_psql('postgres', 'CREATE EXTENSION backfill');
is( $node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'backfill'}),
	$old_version,
	"CREATE EXTENSION backfill creates version $old_version");

create_events($node, 12000);
# An index on the source's key: writes into a partition during its build are caught up by key
# from release 1.1 on (the source can be read by key cheaply).
$node->safe_psql('postgres', 'CREATE INDEX raw_id_day ON raw (id, day); ANALYZE raw');
my $gate_key = 4216;
create_gate($node, $gate_key);
$node->safe_psql(
	'postgres', qq{
DO \$\$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['done_t', 'paused_t'] LOOP
        EXECUTE format('CREATE TABLE %I (id bigint NOT NULL, day date NOT NULL, amount int NOT NULL, '
                       'PRIMARY KEY (id, day)) PARTITION BY RANGE (day)', t);
        FOR q IN 0..3 LOOP
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                           t || '_q' || (q + 1), t, make_date(2024, 3 * q + 1, 1),
                           (make_date(2024, 3 * q + 1, 1) + interval '3 months')::date);
        END LOOP;
        EXECUTE format('INSERT INTO %I SELECT id, day, amount FROM raw', t);
    END LOOP;
END
\$\$;
});

# The control rows of every task, without the columns the upgrade adds: before the upgrade and
# after it, the same for a task nothing ran meanwhile.
sub task_rows
{
	my ($job) = @_;
	return $node->safe_psql(
		'postgres', qq{
SELECT string_agg((to_jsonb(t) - '{catch_up_key,keys_caught_up,catch_up_rounds,rebuilds}'::text[])::text,
                  E'\\n' ORDER BY task_no)
FROM backfill.tasks t WHERE job = $job});
}

sub job_row
{
	my ($job) = @_;
	return $node->safe_psql('postgres',
		"SELECT to_jsonb(j)::text FROM backfill.jobs j WHERE id = $job");
}

sub backfill_workers
{
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'backfill worker'");
}

# The job that is done.
my $source_done = q{SELECT id, day, amount + 1 AS amount FROM raw WHERE day >= $1 AND day < $2};
my $job_done = $node->safe_psql('postgres',
	qq{SELECT backfill_start('done_t', '2024-01-01', '2025-01-01', \$src\$$source_done\$src\$)});
is(wait_job($node, $job_done), 'done', "release $old_version: job $job_done (done_t) is done");
is(table_equals($node, 'TABLE done_t', 'SELECT id, day, amount + 1 FROM raw'),
	'0|0', 'done_t equals its source');

# The job paused by the DBA after its first task (it waits an hour after each task, so it is
# paused between tasks).
my $source_paused = q{SELECT id, day, amount + 2 AS amount FROM raw WHERE day >= $1 AND day < $2};
my $job_paused = $node->safe_psql('postgres',
	qq{SELECT backfill_start('paused_t', '2024-01-01', '2025-01-01', \$src\$$source_paused\$src\$, pause => '1h')}
);
ok( $node->poll_query_until(
		'postgres', "SELECT tasks_done = 1 FROM backfill_status($job_paused)"),
	"release $old_version: job $job_paused (paused_t) has done its first task");
$node->safe_psql('postgres', "SELECT backfill_pause($job_paused)");
ok(wait_for_state($node, $job_paused, 'paused'), "job $job_paused is paused by backfill_pause");
is(task_states($node, $job_paused), 'done:1 pending:0 pending:0 pending:0',
	'its first task is done, the others pending');

# The job held inside its third task (March, its load waits at the gate) when the server stops.
$node->safe_psql('postgres', 'CREATE TABLE snap AS TABLE events');
my $catalog_before = catalog_snapshot($node);
my $gate = close_gate($node, $gate_key);
my $job_mid = $node->safe_psql('postgres',
	q{SELECT backfill_start('events', '2024-01-01', '2025-01-01', 'gated')});
ok(wait_at_gate($node, $gate_key),
	"release $old_version: job $job_mid (events): its worker waits at the gate, inside task 3");
is(task_states($node, $job_mid), 'done:1 done:1 running:1' . ' pending:0' x 9,
	'tasks 1 and 2 are done, task 3 is running');
is(task_phase($node, $job_mid, 3), "shadow bf_shadow_${job_mid}_3",
	'task 3 is loading its shadow');

my %tasks_before = map { $_ => task_rows($_) } $job_done, $job_paused, $job_mid;
my $done_job_before = job_row($job_done);
$node->stop('immediate');
$gate->quit;

# =============================================================================================
# 2. This tree's release installed; the server started, the extension not updated yet.
install_release(@new_release);
my $log_offset = -s $node->logfile;
$node->start;
is(loaded_library(), "$here{PKGLIBDIR}/backfill.so",
	'the server has loaded the library of the private installation');
is(compare(loaded_library(), $new_release[0]),
	0, "that library is this tree's, release $new_version");
is( $node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'backfill'}),
	$old_version,
	"the extension in the database is still $old_version");

my $outdated = qr/the backfill extension in this database is version \Q$old_version\E, its library version \Q$new_version\E/;
my $update = "ALTER EXTENSION backfill UPDATE TO '$new_version'";

# The launcher resumes the job that was running; its worker pauses it at once, saying why.
$node->wait_for_log(qr/backfill: resuming job $job_mid in database \d+ after a server start/,
	$log_offset);
pass("after the start, the launcher resumes job $job_mid");
ok( $node->poll_query_until(
		'postgres', "SELECT state = 'paused' AND last_error IS NOT NULL FROM backfill.jobs WHERE id = $job_mid"),
	"its worker leaves job $job_mid paused");
my $last_error = $node->safe_psql('postgres', "SELECT last_error FROM backfill_status($job_mid)");
like($last_error, $outdated, 'last_error says that the extension is older than the library');
like($last_error, qr/\Q$update\E/, "last_error names $update");
ok($node->poll_query_until('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'backfill worker'", '0'),
	'no backfill worker runs');
is(task_rows($job_mid), $tasks_before{$job_mid}, "job $job_mid: no task was touched");
is( $node->safe_psql('postgres', "SELECT to_regclass('parts.bf_shadow_${job_mid}_3') IS NOT NULL"),
	't', 'the shadow of its interrupted task is still there');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
WHERE t.tgrelid = 'parts.events_2024_03'::regclass AND p.oid = 'backfill.note_write'::regproc}),
	'2', "so are the write-noting triggers of release $old_version on its partition");
my $files_from = $node->safe_psql('postgres',
	"SELECT files_from FROM backfill.tasks WHERE job = $job_mid AND task_no = 3");
ok( scalar(grep { /^(\d+)/; $1 >= $files_from } orphan_files($node)) > 0,
	'and the files of its load\'s uncommitted TRUNCATE');
is( $node->safe_psql('postgres',
		"SELECT state || ' ' || coalesce(last_error, '-') FROM backfill_status($job_paused)"),
	'paused -', "job $job_paused, paused by the DBA, stays paused and untouched");

# The application goes on writing, also into the partition whose build was cut short (its
# write-noting triggers, of release 1.0, are still on it).
my ($write_ret, $write_out, $write_err) = $node->psql(
	'postgres',
	q{INSERT INTO events (id, day, amount) VALUES (1000001, '2024-03-15', 1);
	  UPDATE events SET amount = amount + 1 WHERE id = 1000001;
	  DELETE FROM parts.events_2024_05 WHERE id = (SELECT min(id) FROM parts.events_2024_05)});
is($write_ret, 0, 'writes into the partitions, the one whose build was cut short too, work')
  or diag($write_err);

# A backfill_resume before the update: the job is paused again with the reason, nothing run.
$node->safe_psql('postgres', "SELECT backfill_resume($job_paused)");
ok( $node->poll_query_until(
		'postgres', qq{
SELECT state = 'paused' AND last_error IS NOT NULL FROM backfill.jobs WHERE id = $job_paused}),
	"backfill_resume($job_paused) before the update: its worker leaves it paused");
like($node->safe_psql('postgres', "SELECT last_error FROM backfill_status($job_paused)"),
	$outdated, 'with the reason');
ok($node->poll_query_until('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'backfill worker'", '0'),
	'no backfill worker runs');
is(task_rows($job_paused), $tasks_before{$job_paused}, "job $job_paused: no task was touched");
is(task_rows($job_done), $tasks_before{$job_done}, "job $job_done: its tasks are as they were");

# The functions that need the new objects refuse, saying what to run.
for my $call (
	[ 'backfill_start', q{SELECT backfill_start('done_t', '2024-01-01', '2025-01-01', 'raw')} ],
	[ 'backfill_plan',  q{SELECT * FROM backfill_plan('done_t', '2024-01-01', '2025-01-01')} ],
	[ 'backfill_tasks', "SELECT * FROM backfill_tasks($job_done)" ])
{
	my ($name, $sql) = @$call;
	my ($ret, $stdout, $stderr) = $node->psql('postgres', $sql);
	isnt($ret, 0, "before the update, $name fails");
	like($stderr, qr/ERROR:  $outdated/, "$name: the extension is older than the library");
	like($stderr, qr/HINT:  Run \Q$update\E in this database/, "$name: the hint names $update");
}
is( $node->safe_psql('postgres', 'SELECT count(*) FROM backfill.jobs'),
	'3', 'no job was started');
is(task_rows($_), $tasks_before{$_}, "job $_: still, no task was touched")
  for $job_done, $job_paused, $job_mid;

# What the extension is made of, listed by queries: compared between the upgraded database and
# a fresh one (part 4), and, to show that the listings see the upgrade, with the upgraded
# database's before the update.
my %definition = (
	'member objects (pg_depend)' => q{
SELECT line FROM (
    SELECT pg_describe_object(classid, objid, objsubid) AS line FROM pg_depend
    WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
      AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'backfill')
) s ORDER BY line COLLATE "C"},
	'columns of backfill.jobs' => q{
SELECT concat_ws(' ', attnum, attname, format_type(atttypid, atttypmod), attnotnull,
                 pg_get_expr(adbin, adrelid), attidentity, attgenerated, attacl)
FROM pg_attribute LEFT JOIN pg_attrdef ON adrelid = attrelid AND adnum = attnum
WHERE attrelid = 'backfill.jobs'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum},
	'columns of backfill.tasks' => q{
SELECT concat_ws(' ', attnum, attname, format_type(atttypid, atttypmod), attnotnull,
                 pg_get_expr(adbin, adrelid), attidentity, attgenerated, attacl)
FROM pg_attribute LEFT JOIN pg_attrdef ON adrelid = attrelid AND adnum = attnum
WHERE attrelid = 'backfill.tasks'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum},
	'columns, constraints, indexes, triggers and rights of the relations of schema backfill' => q{
SELECT line FROM (
    SELECT concat_ws(' ', 'column', c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
                     a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attacl) AS line
    FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE c.relnamespace = 'backfill'::regnamespace
    UNION ALL
    SELECT concat_ws(' ', 'relation', c.relname, c.relkind, c.relpersistence, c.relacl, c.reloptions)
    FROM pg_class c WHERE c.relnamespace = 'backfill'::regnamespace
    UNION ALL
    SELECT concat_ws(' ', 'constraint', c.relname, con.conname, pg_get_constraintdef(con.oid))
    FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
    WHERE c.relnamespace = 'backfill'::regnamespace
    UNION ALL
    SELECT concat_ws(' ', 'index', pg_get_indexdef(i.indexrelid))
    FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = 'backfill'::regnamespace
    UNION ALL
    SELECT concat_ws(' ', 'trigger', pg_get_triggerdef(t.oid), t.tgenabled)
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    WHERE c.relnamespace = 'backfill'::regnamespace AND NOT t.tgisinternal
    UNION ALL
    SELECT concat_ws(' ', 'schema', nspname, nspowner::regrole, nspacl) FROM pg_namespace
    WHERE nspname = 'backfill'
) s ORDER BY line COLLATE "C"},
	'functions and procedures' => q{
SELECT line FROM (
    SELECT concat_ws(' | ', p.oid::regprocedure, pg_get_function_arguments(p.oid),
                     pg_get_function_result(p.oid), p.prokind, p.provolatile, p.proisstrict,
                     p.prosecdef, p.proparallel, p.proconfig, p.proacl, l.lanname, p.probin,
                     md5(p.prosrc)) AS line
    FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid JOIN pg_language l ON l.oid = p.prolang
    WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_extension'::regclass
      AND d.deptype = 'e' AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'backfill')
) s ORDER BY line COLLATE "C"},
	'configuration tables and version (pg_extension)' => q{
SELECT concat_ws(' | ', extversion, extrelocatable, extnamespace::regnamespace,
                 extconfig::regclass[], extcondition)
FROM pg_extension WHERE extname = 'backfill'},);

sub describe_extension
{
	my ($db) = @_;
	my %listing = map { $_ => $node->safe_psql($db, $definition{$_}) } keys %definition;
	my ($ret, $stdout, $stderr) = $node->psql($db, '\dx+ backfill');
	die "\\dx+ backfill failed in database $db: $stderr" if $ret;
	$listing{'\dx+ backfill'} = $stdout;
	return \%listing;
}

# =============================================================================================
# 3. ALTER EXTENSION backfill UPDATE, then the jobs resumed.
my $before_update = describe_extension('postgres');
$node->safe_psql('postgres', 'ALTER EXTENSION backfill UPDATE');
is( $node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'backfill'}),
	$new_version,
	"ALTER EXTENSION backfill UPDATE brings the extension to $new_version");

$log_offset = -s $node->logfile;
$node->safe_psql('postgres', "SELECT backfill_set($job_paused, 'pause', '0s')");
$node->safe_psql('postgres', "SELECT backfill_resume($job_paused)");
$node->safe_psql('postgres', "SELECT backfill_resume($job_mid)");
is(wait_job($node, $job_paused), 'done', "job $job_paused, resumed, is done");
is(wait_job($node, $job_mid),    'done', "job $job_mid, resumed, is done");
$node->wait_for_log(qr/backfill: removing the files of \d+ relations that no relation owns/,
	$log_offset);
pass("job $job_mid removed the files its interrupted task left (the log says so)");

is(table_equals($node, 'TABLE paused_t', 'SELECT id, day, amount + 2 FROM raw'),
	'0|0', 'paused_t equals its source');
is( table_equals(
		$node, 'TABLE events',
		q{SELECT id, day, amount * 5, 'fresh'::text, amount * 10 FROM raw}),
	'0|0',
	'events equals its source');
is(table_equals($node, 'TABLE done_t', 'SELECT id, day, amount + 1 FROM raw'),
	'0|0', 'done_t still equals its source');
is(catalog_snapshot($node), $catalog_before,
	'every partition of events has its properties, and no trigger of the job is left');

# Rows before: as in snap, with the writes made into March and May before the update.
is( tasks_actual($node, $job_mid),
	tasks_expected(
		$node,
		q{SELECT day FROM snap WHERE id <> (SELECT min(id) FROM snap WHERE day >= '2024-05-01' AND day < '2024-06-01')
		  UNION ALL SELECT date '2024-03-15'},
		'TABLE raw',
		'parts.events_2024_03' => 2),
	"job $job_mid: every task done once, the interrupted one twice");
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(state || ':' || attempts, ' ' ORDER BY partition) FROM backfill_tasks($job_paused)"),
	'done:1 done:1 done:1 done:1',
	"job $job_paused: every task done once");

# The done job: its job row and tasks as they were, the new columns at their defaults.
is(job_row($job_done), $done_job_before, "job $job_done: its row is as it was");
is(task_rows($job_done), $tasks_before{$job_done}, "job $job_done: its tasks are as they were");
is( $node->safe_psql(
		'postgres', qq{
SELECT string_agg(concat_ws(' ', coalesce(catch_up_key, '-'), keys_caught_up, catch_up_rounds, rebuilds), ', ')
FROM backfill.tasks WHERE job = $job_done}),
	join(', ', ('- 0 0 0') x 4),
	"job $job_done: the added columns hold their defaults");

# backfill_tasks works, with the new columns; the tasks run before the update have no catch-up
# key, those run after it have the partitions' key.
is( $node->safe_psql(
		'postgres', qq{
SELECT string_agg(k, ', ') FROM (
    SELECT json_object_keys(row_to_json(t)) AS k
    FROM (SELECT * FROM backfill_tasks($job_done) LIMIT 1) t) s}),
	'partition, lower_bound, upper_bound, state, attempts, rows_before, rows_after, '
	  . 'swap_lock_ms, started_at, finished_at, error, catch_up_key, keys_caught_up, '
	  . 'catch_up_rounds, rebuilds',
	'backfill_tasks gives the new columns');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(state, ' ' ORDER BY partition) FROM backfill_tasks($job_done)"),
	'done done done done',
	"backfill_tasks($job_done): every task done");
my $key = $node->safe_psql('postgres',
	"SELECT catch_up_key FROM backfill_tasks($job_mid) WHERE partition = 'parts.events_2024_12'");
like($key, qr/\bid\b.*\bday\b/, "the tasks run after the update catch writes up by key: $key");
is( $node->safe_psql(
		'postgres', qq{
SELECT string_agg(coalesce(catch_up_key, '-'), ', ' ORDER BY partition) FROM backfill_tasks($job_mid)}),
	join(', ', ('-') x 2, ($key) x 10),
	"job $job_mid: tasks 1 and 2 (run by release $old_version) without a catch-up key, the others with it");
is( $node->safe_psql(
		'postgres', qq{
SELECT string_agg(coalesce(catch_up_key, '-'), ', ' ORDER BY partition) FROM backfill_tasks($job_paused)}),
	join(', ', '-', ($key) x 3),
	"job $job_paused: task 1 without a catch-up key, the others with it");

# Nothing of the interrupted builds left.
is(leftover_relations($node, $_), '', "job $_: no shadow or old partition left")
  for $job_done, $job_paused, $job_mid;
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname LIKE 'bf\_shadow\_%' OR (n.nspname = 'backfill' AND c.relname LIKE 'keys\_%')}),
	'0',
	'no shadow table (bf_shadow_%) and no key log (backfill.keys_%) is left');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'backfill' AND p.proname IN ('note_write', 'note_key')}),
	'0',
	'no write-noting trigger is left on any table');
is($node->safe_psql('postgres', 'SELECT count(*) FROM backfill.writes'),
	'0', 'no write marker is left');
is(join(', ', orphan_files($node)), '', 'every data file of the database belongs to a relation');
is(backfill_workers(), '0', 'no backfill worker runs');

# =============================================================================================
# 4. A fresh CREATE EXTENSION has the same objects as the upgraded extension.
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION backfill');
is( $node->safe_psql('fresh', q{SELECT extversion FROM pg_extension WHERE extname = 'backfill'}),
	$new_version,
	"a fresh CREATE EXTENSION backfill creates version $new_version");

my $fresh    = describe_extension('fresh');
my $upgraded = describe_extension('postgres');
for my $what (sort keys %$fresh)
{
	isnt($fresh->{$what}, '', "fresh extension: its $what listed");
	is($upgraded->{$what}, $fresh->{$what}, "upgraded and fresh extension: the same $what");
}
like($fresh->{'\dx+ backfill'}, qr/function backfill\.note_key\(\)/,
	'the fresh extension has the objects of the upgrade script (\dx+ backfill)');
for my $what ('member objects (pg_depend)', 'columns of backfill.tasks', 'functions and procedures',
	'\dx+ backfill')
{
	isnt($before_update->{$what}, $fresh->{$what},
		"before the update, the upgraded database's $what differed");
}

$node->stop;
done_testing();
