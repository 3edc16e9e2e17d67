/*
 * Ballast's ordered failover (ARCHITECTURE.md, "Ordered failover"), as a Promela model
 * for spin: one Kafka partition P, one key K.
 *
 * A client writes the values 1..N for K one after another: it sends v+1 only after v
 * was acknowledged. Each send goes to either of two gateways, and a send that gets a
 * retryable error is sent again, with the same value, to either gateway. A Kafka write
 * can succeed, fail, or time out yet land. The failover store holds P's queue entries
 * in id order, P's divert mark (present or not, with a generation that every enqueue
 * bumps) and dead letters, which stay in place at the head.
 *
 * Gateways. Each holds a lease snapshot of the marks: expired, or valid and saying "P
 * diverted" or "P clean". A gateway writes P directly only while its snapshot is valid,
 * says P clean, and it has no local divert of P. Otherwise it enqueues (the entry, the
 * mark's upsert and the generation bump are one transaction) and sets its local
 * divert, which lasts until a later snapshot shows the mark gone. A direct write that
 * fails is failed over the same way. After an enqueue the gateway waits one lease, then
 * acknowledges. An enqueue can also go wrong in two ways:
 * - it fails and stores nothing: the gateway answers a retryable error at once;
 * - its outcome is unknown (it timed out, and may have committed or not): the gateway
 *   sets its local divert and waits the same lease, and only then answers a retryable
 *   error. So the client's resend, at either gateway, finds any "P clean" snapshot
 *   read before the enqueue expired.
 * A gateway can restart between requests: it loses its snapshot and its local divert,
 * and its lease is expired. A new gateway has an expired lease too.
 *
 * Time and leases. There are no clocks; the model keeps only what the lease length
 * guarantees:
 * - a read takes a snapshot of the mark in one atomic step, and a gateway may read at
 *   any time (the model skips a read that would leave the gateway holding what it
 *   holds, which leads to the same state; so runs end);
 * - a snapshot stays valid until something expires it, for as long as the
 *   nondeterminism likes: no lease is assumed to run out sooner than it must;
 * - it may run out on its own at any moment, EXPIRIES times per run (0 by default: a
 *   restart already gives a gateway an expired lease at any moment between requests;
 *   check.sh --deep runs 1);
 * - the ack wait. When an enqueue answers (or its outcome is unknown), every snapshot
 *   that is valid and says "P clean" is noted as read before it (a later read clears
 *   the note). The wait is one atomic step that expires every snapshot so noted: one
 *   lease after the enqueue, any lease read before it has run out. A snapshot that saw
 *   a mark, or that was read after the enqueue (it says P clean only if a worker has
 *   cleared the mark since), stays valid through the wait.
 *
 * Retry workers. A receive leases P's head run (the first 1..all entries in id order)
 * in one step, and only if no entry of P is leased (by a live or a dead worker) and
 * none is dead-lettered. The worker writes the run to Kafka in id order; after a
 * failed write it may stop or go on with the rest (a timed-out entry can leave a gap
 * that later entries fill). It then settles the run in one transaction, as the SQL
 * backends do: it deletes only the longest delivered prefix, charges the first
 * undelivered entry an attempt, releases the lease, and clears the mark only if no
 * enqueue has bumped its generation since the receive and P has no entry, live or
 * dead. At MAX_ATTEMPTS attempts that entry becomes a dead letter in place, and P is
 * blocked until the operator redrives it to the head. The model lets the redrive
 * happen at any time after (the BallastDeadLetters alert pages someone), so dead
 * letters are not left out of the end state below. A worker can die holding its lease
 * after it wrote part or all of its run (the lease later expires, the entries stay;
 * dying before the first write is the same as being slow); a dead worker's process
 * goes on as a new worker. It cannot die between its delete and its clear, since they
 * are one transaction, so no mark is ever left without entries and nothing needs to
 * sweep such marks. A backend that kept its marks apart from its queue (the S3 marks
 * planned for SQS) could leave one, and would need that crash point and a sweep here.
 *
 * Two workers, but in the protocol at most one is between its receive and its delete
 * at a time (the receive needs P unleased), and two idle workers are alike. So worker
 * 2 receives only while worker 1 is busy, which only BUG_TWO_WORKERS_ONE_PARTITION
 * allows: otherwise every state would also be stored with the workers swapped. Of the
 * generation, the model keeps only what the clear compares: whether an enqueue has
 * bumped it since the worker's receive (bumped[w]).
 *
 * Bounds (-D overrides each): N = 3 values, KAFKA_FAULTS = 1 (Kafka writes that fail
 * or time out, the gateways' and the workers' together; check.sh --deep runs 2),
 * QUEUE_FAULTS = 1 enqueue that fails, UNKNOWN_ENQUEUES = 1 enqueue whose outcome is
 * unknown, WORKER_CRASHES = 1, RESTARTS = 1 gateway restart, EXPIRIES = 0,
 * MAX_ATTEMPTS = 1 (so one failed run dead-letters its head).
 *
 * Not modelled: a client that resends while its first send is still in flight at a
 * gateway; a gateway that restarts in the middle of a request (but see
 * RESTART_IN_ACK_WAIT below); a Kafka write that the broker appends after the writer
 * saw it time out (the torture run measures that); a worker lease that expires under a
 * live worker (a run never starts with less than kafka.write_timeout of lease left).
 *
 * Kafka is kept as the order of the last copies of its values (last[0..nlast-1]):
 * appending v moves v to the end. That is all the two properties look at.
 *
 * Properties (check.sh). Assertions, checked once the client has every value
 * acknowledged, the queue is empty and no worker is between its receive and its
 * delete. pan also reports a run that cannot get there as an invalid end state.
 *   order            for acknowledged values i < j, the last copy of i in Kafka comes
 *                    before the last copy of j, and every acknowledged value is in
 *                    Kafka. Retries and timeouts put copies anywhere, but a compacted
 *                    topic, or a consumer that keeps the latest value per key, ends up
 *                    with the order of the last copies. It is checked at the end, not
 *                    at each append: a failed run's retry writes again entries that had
 *                    landed, so a value can be out of order for a while until its own
 *                    later copy puts it right (-DCHECK_ORDER)
 *   last_write_wins  the last value in Kafka is N, the last one acknowledged
 *                    (-DCHECK_LWW)
 *
 * Broken variants, each of which spin must reject:
 *   BUG_NO_STICKY_DIVERT           a gateway ignores the marks, its lease and its local
 *                                  divert: it always tries Kafka first and fails over
 *                                  only when the write fails
 *   BUG_TWO_WORKERS_ONE_PARTITION  a receive leases the entries behind another
 *                                  worker's run: the lease on P is not exclusive
 *   BUG_FORGET_DIVERT_ON_RESTART   a restarted gateway comes up with a valid "P clean"
 *                                  snapshot instead of an expired lease
 *   BUG_NO_ACK_WAIT                the gateway acknowledges right after its enqueue
 *   BUG_NO_WAIT_ON_UNKNOWN_ENQUEUE after an enqueue whose outcome is unknown, the
 *                                  gateway answers the error at once, without the wait
 *
 * SQS_FIFO: the design for an SQS FIFO queue with its marks in S3 (ARCHITECTURE.md,
 * "Ordered failover on SQS FIFO"). What changes:
 * - an enqueue is two steps: the mark's bump (a conditional put) and then the send. A
 *   send that fails, or whose outcome is unknown, leaves a bumped mark behind; the
 *   gateway can also die between the two (RESTARTS), and then nothing is sent;
 * - the queue is the partition's lease, as FIFO hands out no message of a group while one
 *   is in flight: the receive is the same as above;
 * - there is no transaction to clear the mark in. A barrier does: while no enqueue is
 *   between its bump and its send (each enqueue records in the mark that its send has
 *   answered; one that never does, counts until its gateway's failover.write_timeout
 *   and a margin have passed since its bump), a worker may send a barrier, an entry that
 *   carries the mark's generation, into the group (BARRIERS of them per run, one live at
 *   a time). A bump makes every barrier in the queue stale (its generation is not the
 *   mark's). A worker that receives a barrier deletes it with the run's delivered prefix
 *   and then, in a second call that it can die before, deletes the mark if no bump came
 *   since (the conditional delete on the mark's ETag);
 * - the SQL clear at the end of a run is gone.
 * Its broken variant, which spin must reject:
 *   BUG_BARRIER_WITHOUT_SETTLE     a worker sends a barrier while an enqueue is between
 *                                  its bump and its send
 *
 * A known window of the implementation, off by default and not run by check.sh (spin
 * rejects both properties with it; see docs/src/proving.md):
 *   RESTART_IN_ACK_WAIT  a gateway dies after its enqueue committed (or may have) and
 *                        before its ack wait ended. The client resends to the other
 *                        gateway, whose "P clean" lease read before the mark is still
 *                        valid: it writes the value directly and acknowledges it, then
 *                        the next value too, and the orphaned queue entry lands after
 *                        them.
 */

#ifndef N
#define N 3                  /* values 1..N for key K */
#endif
#ifdef SQS_FIFO
#define MAXIDS 8             /* queue entry ids 0..MAXIDS-1, barriers included */
#ifndef BARRIERS
#define BARRIERS 1           /* check.sh --deep runs 2 */
#endif
#else
#define MAXIDS 6             /* queue entry ids 0..MAXIDS-1 */
#endif
#define G 2                  /* gateways */
#define NONE 255

/* How often the environment breaks things; -D overrides each. */
#ifndef KAFKA_FAULTS
#define KAFKA_FAULTS 1       /* check.sh --deep runs 2 */
#endif
#ifndef QUEUE_FAULTS
#define QUEUE_FAULTS 1       /* enqueues that fail and store nothing */
#endif
#ifndef UNKNOWN_ENQUEUES
#define UNKNOWN_ENQUEUES 1   /* enqueues whose outcome is unknown: stored or not */
#endif
#ifndef WORKER_CRASHES
#define WORKER_CRASHES 1
#endif
#ifndef RESTARTS
#define RESTARTS 1
#endif
#ifndef EXPIRIES
#define EXPIRIES 0           /* snapshots that run out on their own (see the header) */
#endif
/* retry.max_attempts: 1 lets one failed run dead-letter its head, so the dead-letter
 * block and the redrive are explored within the default bounds. */
#ifndef MAX_ATTEMPTS
#define MAX_ATTEMPTS 1
#endif
byte kafka_faults = KAFKA_FAULTS;   /* Kafka writes that fail or time out */
byte queue_faults = QUEUE_FAULTS;   /* enqueues that fail and store nothing */
byte unknown_enqueues = UNKNOWN_ENQUEUES;   /* enqueues whose outcome is unknown */
byte worker_crashes = WORKER_CRASHES;
byte restarts = RESTARTS;           /* gateway restarts */
byte expiries = EXPIRIES;

/* Kafka: P's values in the order of their last copies. */
byte last[N];
byte nlast;
byte scratch;                       /* loop index inside atomic steps; always 0 between them */

/* The failover store. Entry id i holds the value ev[i]; sets of ids are bit masks. */
byte ev[MAXIDS];
byte present;                       /* ids in the queue (live or dead) */
byte dead;                          /* ids dead-lettered, in place */
byte att[MAXIDS];                   /* attempts charged */
byte nextid;
bool mark;                          /* P's divert mark */
bool bumped[3];                     /* bumped[w]: an enqueue has bumped the mark's generation
                                       since worker w's receive (false while w is idle) */
#ifdef SQS_FIFO
bool pending;                       /* an enqueue is between its bump and its send */
byte isbar;                         /* ids that are barriers */
byte bstale;                        /* barriers a bump came after */
bool bfresh[3];                     /* bfresh[w]: worker w deleted a barrier that no bump
                                       has come after, and has not cleared the mark yet */
byte barriers = BARRIERS;
#endif

/* Worker leases: leased[w] is the ids leased by worker w (1, 2); leased[0] those held
 * by dead workers, until they expire. busy[w]: between its receive and its delete. */
byte leased[3];
bool busy[3];

/* Gateways. */
bool valid[G];                      /* the lease snapshot has not run out */
bool saw[G];                        /* the snapshot showed P's mark */
bool ldiv[G];                       /* the gateway enqueued for P itself */
bool older[G];                      /* the snapshot is "P clean" and older than the enqueue
                                       whose ack wait is under way */
byte serving = NONE;                /* the gateway the client's send is at */

byte acked;                         /* the client's highest acknowledged value */
bool client_done;
hidden byte last_copies_in_ack_order, kafka_ends_with_last_ack;   /* the Audit's verdicts */

#define bit(i) (1 << (i))
#define anyleased (leased[0] | leased[1] | leased[2])

inline append(v) {
    scratch = 0;
    do
    :: scratch < nlast && last[scratch] != v -> scratch++
    :: else -> break
    od;
    if
    :: scratch < nlast ->           /* v is in Kafka: its last copy moves to the end */
       do
       :: scratch + 1 < nlast -> last[scratch] = last[scratch + 1]; scratch++
       :: else -> break
       od;
       last[nlast - 1] = v
    :: else -> last[nlast] = v; nlast++
    fi;
    scratch = 0
}

/* Ids only order the entries: while no worker holds any, renumber them from 0, so
 * that the same queue is the same state. */
inline renumber() {
    if
    :: anyleased == 0 && !busy[1] && !busy[2] ->
       do
       :: present != 0 && (present & 1) == 0 ->
          scratch = 0;
          do
          :: scratch + 1 < MAXIDS ->
             ev[scratch] = ev[scratch + 1]; att[scratch] = att[scratch + 1]; scratch++
          :: else -> break
          od;
          ev[MAXIDS - 1] = 0; att[MAXIDS - 1] = 0; scratch = 0;
          present = present >> 1; dead = dead >> 1; nextid--
#ifdef SQS_FIFO
          ; isbar = isbar >> 1; bstale = bstale >> 1
#endif
       :: present == 0 -> nextid = 0; break
       :: else -> break
       od
    :: else
    fi
}

/* Entry, mark upsert and generation bump, in one transaction. */
inline store(v) {
    assert(nextid < MAXIDS);
    ev[nextid] = v; present = present | bit(nextid); nextid++;
    mark = true; bumped[1] = busy[1]; bumped[2] = busy[2]
}

#ifdef SQS_FIFO
/* SQS: the mark's bump (made, or its generation raised), before the send. */
inline bump() {
    mark = true; pending = true;
    bstale = bstale | isbar; bfresh[1] = false; bfresh[2] = false
}

/* SQS: the send, after the bump. */
inline send(v) {
    assert(nextid < MAXIDS);
    ev[nextid] = v; present = present | bit(nextid); nextid++
}
#endif

/* Once its enqueue has answered (or may have committed), the gateway sets its local
 * divert and its ack wait starts: note every "P clean" snapshot read before it. */
inline divert(g) {
    ldiv[g] = true;
    scratch = 0;
    do
    :: scratch < G -> older[scratch] = valid[scratch] && !saw[scratch]; scratch++
    :: else -> break
    od;
    scratch = 0
}

#define forget_older() older[0] = false; older[1] = false   /* nobody waits for them */

/* One lease after the enqueue, every lease read before it has run out. */
inline ack_wait() {
    scratch = 0;
    do
    :: scratch < G ->
       if :: older[scratch] -> valid[scratch] = false; older[scratch] = false :: else fi;
       scratch++
    :: else -> break
    od;
    scratch = 0
}

/* The client, and the gateway its send is at. The gateway's decision on its lease and
 * its direct write are one step: the client has nothing else in flight, so nothing
 * can set the mark in between (only the client enqueues), and what else could come
 * between them (a worker's write, a read, the other gateway's restart) is explored on
 * either side of the step. */
active proctype Client() {
    byte v = 1;
    byte g;
    bool queued;                   /* the send's enqueue may have committed: the ack wait is on */
    bool unknown;                  /* its outcome is unknown: the wait ends in an error */
    bool bumped_mine;              /* SQS: its bump is made, its send not yet */
    do
    :: atomic {    /* send v to either gateway */
           v <= N && serving == NONE ->
           if :: g = 0 :: g = 1 fi;
           serving = g;
#ifdef BUG_NO_STICKY_DIVERT
           if :: true ->
#else
           if :: valid[g] && !saw[g] && !ldiv[g] ->
#endif
              if
              :: append(v); acked = v; v++; serving = NONE; g = 0        /* acknowledged */
              :: kafka_faults > 0 -> kafka_faults--                       /* fails: fail over */
              :: kafka_faults > 0 -> kafka_faults--; append(v)            /* timed out, landed */
              fi
           :: else                                                        /* diverted */
           fi
       }
    :: atomic { serving != NONE && !queued && !bumped_mine && queue_faults > 0 ->
                queue_faults--; serving = NONE; g = 0 }     /* enqueue fails: retryable error */
#ifdef SQS_FIFO
    /* SQS: the bump, then the send, in two steps. */
    :: atomic { serving != NONE && !queued && !bumped_mine -> bump(); bumped_mine = true }
    :: atomic { bumped_mine && queue_faults > 0 -> queue_faults--;   /* the send fails */
                pending = false; bumped_mine = false; serving = NONE; g = 0 }
    :: atomic { bumped_mine && unknown_enqueues > 0 -> unknown_enqueues--;
                if :: send(v) :: skip fi;                   /* sent, or not */
                pending = false; bumped_mine = false;
                divert(g); queued = true; unknown = true }
    :: atomic { bumped_mine -> send(v); pending = false; bumped_mine = false;
                divert(g); queued = true }
    :: atomic { bumped_mine && restarts > 0 -> restarts--;   /* dies between the two */
                pending = false; bumped_mine = false;
                valid[g] = false; saw[g] = false; ldiv[g] = false;
                serving = NONE; g = 0 }
#else
    :: atomic { serving != NONE && !queued && unknown_enqueues > 0 -> unknown_enqueues--;
                if :: store(v) :: skip fi;                  /* committed, or not */
                divert(g);
#ifdef BUG_NO_WAIT_ON_UNKNOWN_ENQUEUE
                forget_older(); serving = NONE; g = 0       /* the error at once */
#else
                queued = true; unknown = true               /* the error after the wait */
#endif
       }
    :: atomic { serving != NONE && !queued -> store(v); divert(g);
#ifdef BUG_NO_ACK_WAIT
                forget_older();
                acked = v; v++; serving = NONE; g = 0       /* acknowledged at once */
#else
                queued = true
#endif
       }
#endif
    :: atomic { queued -> ack_wait();
                if
                :: unknown -> unknown = false               /* retryable error: v is resent */
                :: else -> acked = v; v++                   /* acknowledged */
                fi;
                serving = NONE; g = 0; queued = false }
#ifdef RESTART_IN_ACK_WAIT
    :: atomic { queued && restarts > 0 -> restarts--;       /* dies before it answers */
                valid[g] = false; saw[g] = false; ldiv[g] = false;
                forget_older();
                serving = NONE; g = 0; queued = false; unknown = false }
#endif
    :: v > N -> break
    od;
    client_done = true
}

/* Gateway g's lease snapshots, and its restarts (between requests). A read is skipped
 * when it would change nothing the gateway holds, so runs can end. */
proctype Lease(byte g) {
end:
    do
    :: atomic {    /* read the marks */
           !valid[g] || saw[g] != mark || (ldiv[g] && !mark) || older[g] ->
           valid[g] = true; saw[g] = mark;
           if :: !mark -> ldiv[g] = false :: else fi;
           older[g] = false
       }
    :: atomic { expiries > 0 && valid[g] -> expiries--; valid[g] = false; older[g] = false }
    :: atomic {
           restarts > 0 && serving != g -> restarts--;
#ifdef BUG_FORGET_DIVERT_ON_RESTART
           valid[g] = true;        /* comes up believing P clean */
#else
           valid[g] = false;       /* must read before it writes directly */
#endif
           saw[g] = false; ldiv[g] = false; older[g] = false
       }
    od
}

/* ids: the first set bit of run at or after id, or MAXIDS */
inline next_in_run(id, rmask) {
    do
    :: id < MAXIDS && (rmask & bit(id)) == 0 -> id++
    :: else -> break
    od
}

inline crash(w) {
    leased[0] = leased[0] | leased[w]; leased[w] = 0; busy[w] = false; bumped[w] = false
}

proctype Worker(byte w) {
    byte cand, rmask, done, id;
    bool failed, crashed;
end:
    do
    :: atomic {    /* receive: lease P's head run */
#ifdef BUG_TWO_WORKERS_ONE_PARTITION
           (present & ~anyleased) != 0 && dead == 0 && (w == 1 || busy[1]) ->
           cand = present & ~anyleased;        /* the entries behind another's run */
#else
           present != 0 && dead == 0 && (present & anyleased) == 0 && (w == 1 || busy[1]) ->
           cand = present;
#endif
           id = 0;
           do
           :: id < MAXIDS && (cand & bit(id)) == 0 -> id++
           :: id < MAXIDS && (cand & bit(id)) != 0 ->
              rmask = rmask | bit(id); id++;
              if :: break :: skip fi           /* the run ends here, or takes the next */
           :: id == MAXIDS -> break
           od;
           leased[w] = leased[w] | rmask; busy[w] = true; cand = 0;
           id = 0; next_in_run(id, rmask)
       };
       /* write the run in id order */
       do
       :: id == MAXIDS -> break
       :: id < MAXIDS ->
          if
#ifdef SQS_FIFO
          :: atomic { (isbar & bit(id)) != 0 ->                           /* a barrier: */
                      if :: !failed -> done = done | bit(id) :: else fi;  /* nothing to write */
                      id++; next_in_run(id, rmask) }
          :: (isbar & bit(id)) == 0 ->
          if
#endif
          :: atomic { append(ev[id]);
                      if :: !failed -> done = done | bit(id) :: else fi;
                      id++; next_in_run(id, rmask) }
          :: atomic { kafka_faults > 0 -> kafka_faults--; failed = true;
                      id++; next_in_run(id, rmask) }
          :: atomic { kafka_faults > 0 -> kafka_faults--; append(ev[id]); failed = true;
                      id++; next_in_run(id, rmask) }                      /* timed out, landed */
          :: atomic { failed -> id = MAXIDS }                             /* the rest is not sent */
          :: atomic { worker_crashes > 0 && (rmask & (bit(id) - 1)) != 0 ->
                      worker_crashes--; crash(w);                         /* dies holding the lease, */
                      crashed = true; id = MAXIDS }                       /* part of the run written */
          fi
#ifdef SQS_FIFO
          fi
#endif
       od;
       if
       :: crashed -> atomic { crashed = false; failed = false; rmask = 0; done = 0; id = 0 }
       :: atomic { !crashed && worker_crashes > 0 -> worker_crashes--; crash(w);   /* dies before */
                   failed = false; rmask = 0; done = 0; id = 0 }                    /* the delete */
       :: !crashed ->
          atomic {   /* one transaction: delete the delivered prefix, charge the first
                        entry left, release the lease, clear the mark if it may go */
              present = present & ~done;
              scratch = 0;         /* a deleted entry's value is gone */
              do
              :: scratch < MAXIDS ->
                 if :: done & bit(scratch) -> ev[scratch] = 0; att[scratch] = 0 :: else fi;
                 scratch++
              :: else -> break
              od;
              scratch = 0;
              leased[w] = leased[w] & ~rmask;
              busy[w] = false;
              if
              :: failed ->
                 id = 0; next_in_run(id, rmask & present);
                 if
                 :: id < MAXIDS ->
                    att[id]++;
                    if :: att[id] >= MAX_ATTEMPTS -> dead = dead | bit(id) :: else fi
                 :: else
                 fi
              :: else
              fi;
#ifdef SQS_FIFO
              /* a barrier that no bump came after was deleted: the mark may go, next */
              bfresh[w] = (done & isbar & ~bstale) != 0;
              isbar = isbar & ~done; bstale = bstale & ~done;
#else
              if
              :: mark && !bumped[w] && present == 0 && dead == 0 -> mark = false
              :: else
              fi;
#endif
              failed = false; rmask = 0; done = 0; id = 0; bumped[w] = false;
              renumber()
          }
#ifdef SQS_FIFO
          ;
          /* the mark's conditional delete, a call of its own: it fails if a bump came */
          if
          :: atomic { bfresh[w] -> mark = false; bfresh[w] = false }
          :: atomic { bfresh[w] && worker_crashes > 0 -> worker_crashes--; bfresh[w] = false }
          :: !bfresh[w] -> skip
          fi
#endif
       fi
    od
}

/* A dead worker's lease expires; the operator redrives a dead letter, in place; under
 * SQS_FIFO, a worker sends a barrier. */
active proctype Environment() {
end:
    do
#ifdef SQS_FIFO
#ifdef BUG_BARRIER_WITHOUT_SETTLE
    :: atomic { mark && barriers > 0 && (isbar & present & ~bstale) == 0 ->
#else
    :: atomic { mark && !pending && barriers > 0 && (isbar & present & ~bstale) == 0 ->
#endif
                barriers--;
                assert(nextid < MAXIDS);
                ev[nextid] = 0; isbar = isbar | bit(nextid); present = present | bit(nextid);
                nextid++ }
#endif
    :: atomic { leased[0] != 0 -> leased[0] = 0; renumber() }
    :: atomic { dead != 0 ->
                scratch = 0;
                do
                :: scratch < MAXIDS ->
                   if :: dead & bit(scratch) -> att[scratch] = 0 :: else fi; scratch++
                :: else -> break
                od;
                scratch = 0; dead = 0 }
    od
}

/* The end: every value acknowledged, the queue drained, no worker mid-run. */
active proctype Audit() {
    atomic {
        client_done && present == 0 && !busy[1] && !busy[2] ->
#if defined(CHECK_ORDER) || !defined(CHECK_LWW)
        /* every acknowledged value (1..N) is in Kafka, last copies in that order */
        last_copies_in_ack_order = (nlast == N);
        scratch = 0;
        do
        :: scratch < nlast ->
           last_copies_in_ack_order = last_copies_in_ack_order && last[scratch] == scratch + 1;
           scratch++
        :: else -> break
        od;
        scratch = 0;
        assert(last_copies_in_ack_order);
#endif
#if defined(CHECK_LWW) || !defined(CHECK_ORDER)
        kafka_ends_with_last_ack = (nlast > 0 && last[nlast - 1] == N);
        assert(kafka_ends_with_last_ack)
#endif
    }
}

init {
    atomic { run Lease(0); run Lease(1); run Worker(1); run Worker(2) }
}
