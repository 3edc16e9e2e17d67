/*
 * Ballast's delivery protocol, as a Promela model for spin.
 *
 * Two records go through one gateway. A Kafka write can succeed, fail, or time out yet
 * land (the gateway sees a failure, the record is in Kafka anyway). A record Kafka did
 * not acknowledge goes to the failover queue, and the gateway acknowledges it only after
 * the enqueue commits; a failed enqueue is a retryable error and the client resends the
 * same id. Two retry workers lease queue entries, write them to Kafka and delete them
 * after Kafka acknowledges; a worker can crash holding a lease, which then expires. A
 * worker's write can also be refused before it reaches Kafka (a half-open partition whose
 * probe another record holds, the in-flight budget); that costs no attempt. After
 * MAX_ATTEMPTS failed Kafka writes an entry moves to the dead-letter store, which pages
 * an operator (the BallastDeadLetters alert) who redrives it. Two
 * consumers of one group read every copy in Kafka and guard their work with dedup:
 * claim (NEW with a fence, IN_PROGRESS, DONE), work, commit with the fence. A consumer
 * can crash after its work and before its commit: its copy is delivered again and its
 * claim stays IN_PROGRESS until the lease expires. A lease can also expire under a
 * consumer that is merely slow.
 *
 * Faults are bounded (the environment breaks things a few times, then lets them work),
 * so every run ends and liveness is meaningful under weak fairness.
 *
 * Properties (see check.sh):
 *   safety      at the end, every acknowledged record is in Kafka or the dead-letter
 *               store, and every record in Kafka was committed by the group; an entry
 *               is dead-lettered only after MAX_ATTEMPTS failed Kafka writes
 *               (assertions, ./pan)
 *   no_double   no id is committed twice in the group (ltl no_double_commit)
 *   liveness    an acknowledged record eventually reaches Kafka or the dead-letter store
 *               (ltl acked_reaches_kafka_or_dlq, ./pan -a -f: weak fairness)
 *
 * Broken variants, each of which spin must reject:
 *   BUG_ACK_BEFORE_ENQUEUE   the gateway acknowledges before the enqueue commits
 *   BUG_INPROGRESS_AS_DONE   a consumer treats IN_PROGRESS as done and moves on
 *   BUG_COMMIT_WITHOUT_FENCE a commit marks DONE whatever the fence
 *   BUG_LEASE_NEVER_EXPIRES  a crashed worker's lease is never given back
 *   BUG_ATTEMPT_WITHOUT_WRITE a write refused before Kafka saw it is charged an attempt
 */

#define N 2                 /* records (ids 0..N-1) */

byte kafka[N];              /* copies of each id in Kafka */
bool acked[N];              /* the client holds an acknowledgement */
bool queued[N];             /* the failover queue holds an entry */
byte lease[N];              /* 0: free; w: leased by worker w; 9: held by a dead worker */
byte committed[N];          /* commits per id in the consumer group */
byte attempts[N];           /* attempts the entry has been charged */
byte failed_writes[N];      /* Kafka writes of the entry that were tried and failed */
bool dead[N];               /* the dead-letter store holds the entry (an alert fires) */

/* How often the environment breaks things; -D overrides each (check.sh --deep raises
 * KAFKA_FAULTS to 2). */
#ifndef KAFKA_FAULTS
#define KAFKA_FAULTS 1
#endif
#ifndef QUEUE_FAULTS
#define QUEUE_FAULTS 1
#endif
#ifndef WORKER_CRASHES
#define WORKER_CRASHES 1
#endif
#ifndef CONSUMER_CRASHES
#define CONSUMER_CRASHES 1
#endif
#ifndef SLOW_EXPIRIES
#define SLOW_EXPIRIES 1
#endif
#ifndef WRITE_REFUSALS
#define WRITE_REFUSALS 1
#endif
/* retry.max_attempts: 1 lets one Kafka fault dead-letter an entry, so that path is
 * explored within the default bounds. */
#ifndef MAX_ATTEMPTS
#define MAX_ATTEMPTS 1
#endif
byte kafka_faults = KAFKA_FAULTS;         /* Kafka writes that fail or time out */
byte queue_faults = QUEUE_FAULTS;         /* enqueues that fail */
byte worker_crashes = WORKER_CRASHES;
byte consumer_crashes = CONSUMER_CRASHES;
byte slow_expiries = SLOW_EXPIRIES;       /* leases that expire under a live consumer */
byte write_refusals = WRITE_REFUSALS;     /* worker writes refused before Kafka saw them */
bool gateway_done = false;

/* dedup, per id */
mtype = { FREE, INPROG, DONE };
mtype dstate[N];
byte dfence[N];             /* fence of the latest claim; claims of an id get increasing fences */
bool holder_dead[N];        /* the IN_PROGRESS holder crashed */

/* the group's view of Kafka: copies settled (offset stored) and copies being worked */
byte settled[N];
byte taken[N];

/* A Kafka write with acks=all. ok: Kafka acknowledged it. */
inline kafka_write(i, ok) {
    if
    :: atomic { kafka[i]++; ok = true }
    :: atomic { kafka_faults > 0 -> kafka_faults--; ok = false }
    :: atomic { kafka_faults > 0 -> kafka_faults--; kafka[i]++; ok = false } /* timed out, landed */
    fi
}

active proctype Gateway() {
    byte i = 0;
    bool ok;
    do
    :: i < N ->
        kafka_write(i, ok);
        if
        :: ok -> acked[i] = true; i++
        :: else ->
            if
            :: atomic { queue_faults > 0 -> queue_faults-- }
#ifdef BUG_ACK_BEFORE_ENQUEUE
                acked[i] = true; i++      /* the client has its ack and moves on */
#endif
                /* otherwise a retryable error: the client resends the same id */
            :: queued[i] = true;          /* the enqueue commits ... */
               acked[i] = true; i++       /* ... and only then the ack */
            fi
        fi
    :: i == N -> break
    od;
    gateway_done = true
}

/* One attempt charged to entry i: dead-lettered at MAX_ATTEMPTS (it leaves the queue for
 * the dead-letter store), else back to the queue for a retry. */
inline charge(i) {
    attempts[i]++;
    if
    :: attempts[i] >= MAX_ATTEMPTS ->
       atomic {
           assert(failed_writes[i] >= MAX_ATTEMPTS);   /* only Kafka failures count */
           dead[i] = true; queued[i] = false; lease[i] = 0
       }
    :: else -> lease[i] = 0                            /* back off, retry */
    fi
}

proctype Worker(byte w) {
    byte i;
    bool ok;
end:
    do
    :: if
       :: atomic { queued[0] && lease[0] == 0 -> lease[0] = w; i = 0 }
       :: atomic { queued[1] && lease[1] == 0 -> lease[1] = w; i = 1 }
       fi;
       if
       :: atomic { worker_crashes > 0 -> worker_crashes--; lease[i] = 9 }   /* dies before writing */
       :: atomic { write_refusals > 0 -> write_refusals-- };                 /* refused before Kafka */
#ifdef BUG_ATTEMPT_WITHOUT_WRITE
          charge(i)
#else
          lease[i] = 0                                                       /* held back, no attempt */
#endif
       :: kafka_write(i, ok);
          if
          :: ok ->
             if
             :: atomic { worker_crashes > 0 -> worker_crashes--; lease[i] = 9 } /* dies before the delete */
             :: atomic { queued[i] = false; lease[i] = 0 }                      /* delete after the ack */
             fi
          :: else -> failed_writes[i]++; charge(i)
          fi
       fi
    od
}

/* A dead worker's lease expires, and the entry can be leased again. */
active proctype WorkerLeaseClock() {
end:
    do
#ifndef BUG_LEASE_NEVER_EXPIRES
    :: atomic { lease[0] == 9 -> lease[0] = 0 }
    :: atomic { lease[1] == 9 -> lease[1] = 0 }
#else
    :: false
#endif
    od
}

/* Dedup leases: a dead holder's lease expires; so, a bounded number of times, does a
 * live but slow holder's. Either way the id can be claimed again, with a higher fence. */
active proctype DedupLeaseClock() {
end:
    do
    :: atomic { dstate[0] == INPROG && (holder_dead[0] || slow_expiries > 0) ->
                if :: !holder_dead[0] -> slow_expiries-- :: else fi;
                dstate[0] = FREE; holder_dead[0] = false }
    :: atomic { dstate[1] == INPROG && (holder_dead[1] || slow_expiries > 0) ->
                if :: !holder_dead[1] -> slow_expiries-- :: else fi;
                dstate[1] = FREE; holder_dead[1] = false }
    od
}

/* Claim: NEW (recorded as got = FREE) with a fresh fence, or the current state. */
inline claim(i) {
    if
    :: dstate[i] == FREE -> dstate[i] = INPROG; holder_dead[i] = false;
                            dfence[i]++; fence = dfence[i]; got = FREE
    :: else -> got = dstate[i]
    fi
}

proctype Consumer() {
    byte i;
    byte fence;
    mtype got;
end:
    do
    :: atomic {     /* a copy is read and its id claimed in one step */
           if
           :: settled[0] + taken[0] < kafka[0] -> taken[0]++; i = 0
           :: settled[1] + taken[1] < kafka[1] -> taken[1]++; i = 1
           fi;
           claim(i)
       };
       do
       :: got == INPROG ->
#ifdef BUG_INPROGRESS_AS_DONE
          got = DONE
#else
          /* another consumer holds it: wait until it is not IN_PROGRESS, claim again */
          atomic { dstate[i] != INPROG -> claim(i) }
#endif
       :: else -> break
       od;
       if
       :: got == DONE -> atomic { taken[i]--; settled[i]++ }
       :: got == FREE ->
          /* the work happens here */
          if
          :: atomic { consumer_crashes > 0 -> consumer_crashes--;
                      taken[i]--;            /* the copy is delivered again */
                      if :: dstate[i] == INPROG && dfence[i] == fence -> holder_dead[i] = true
                         :: else fi }
          :: atomic {
#ifdef BUG_COMMIT_WITHOUT_FENCE
                 dstate[i] = DONE; committed[i]++; taken[i]--; settled[i]++
#else
                 if
                 :: dstate[i] == INPROG && dfence[i] == fence ->
                        dstate[i] = DONE; committed[i]++; taken[i]--; settled[i]++
                 :: else -> taken[i]--   /* commit refused: the copy is delivered again */
                 fi
#endif
             }
          fi
       fi
    od
}

/* Once the gateway is done, the queue is empty and the group has settled every copy,
 * every acknowledged record is in Kafka and every record in Kafka has been processed. */
active proctype Audit() {
    atomic {
        gateway_done && !queued[0] && !queued[1] &&
        settled[0] == kafka[0] && settled[1] == kafka[1] && taken[0] == 0 && taken[1] == 0 ->
        assert(!acked[0] || kafka[0] > 0 || dead[0]);
        assert(!acked[1] || kafka[1] > 0 || dead[1]);
        assert(kafka[0] == 0 || dstate[0] == DONE);
        assert(kafka[1] == 0 || dstate[1] == DONE)
    }
}

init {
    dstate[0] = FREE; dstate[1] = FREE;
    atomic {
        run Worker(1); run Worker(2);
        run Consumer(); run Consumer()
    }
}

ltl no_double_commit { [] (committed[0] <= 1 && committed[1] <= 1) }
ltl acked_reaches_kafka_or_dlq {
    [] ((acked[0] -> <> (kafka[0] > 0 || dead[0])) && (acked[1] -> <> (kafka[1] > 0 || dead[1])))
}
