"""The real Python arq, driven by the Rust interop tests.

Every command prints one JSON document on stdout; values are tagged the way
tests/fixtures/arq tags them ({"$tuple": ..}, {"$exception": ..}, ...).

  produce   enqueue jobs for the Rust worker, wait for their results
  consume   run an arq Worker in burst mode on a queue the Rust side filled
  results   read stored results with Job.result() / Job.status()
  check     decode payloads re-encoded by Rust, compare with expected values
"""

import argparse
import asyncio
import base64
import datetime as dt
import json
import pickle
import sys
import time

import msgpack
from arq import Retry, create_pool
from arq.connections import RedisSettings
from arq.jobs import Job
from arq.worker import Worker, func

SERIALIZERS = {
    'pickle': (None, None),
    'json': (lambda d: json.dumps(d).encode(), json.loads),
    'msgpack': (msgpack.packb, lambda b: msgpack.unpackb(b, raw=False)),
}

LOADERS = {
    'pickle': pickle.loads,
    'json': json.loads,
    'msgpack': lambda b: msgpack.unpackb(b, raw=False),
}


def tagged(o):
    if o is None or isinstance(o, (bool, str)):
        return o
    if isinstance(o, int):
        return o if abs(o) < 2**53 else {'$bigint': str(o)}
    if isinstance(o, float):
        return o
    if isinstance(o, (bytes, bytearray)):
        return {'$bytes_b64': base64.b64encode(bytes(o)).decode()}
    if isinstance(o, tuple):
        return {'$tuple': [tagged(x) for x in o]}
    if isinstance(o, list):
        return [tagged(x) for x in o]
    if isinstance(o, dict):
        if all(isinstance(k, str) for k in o):
            return {k: tagged(v) for k, v in o.items()}
        return {'$dict_pairs': [[tagged(k), tagged(v)] for k, v in o.items()]}
    if isinstance(o, dt.datetime):
        return {'$datetime': o.isoformat()}
    if isinstance(o, BaseException):
        return {'$exception': f'{type(o).__module__}.{type(o).__qualname__}', 'args': [tagged(a) for a in o.args]}
    return {'$repr': repr(o)}


def untag(o):
    if isinstance(o, list):
        return [untag(x) for x in o]
    if isinstance(o, dict):
        if '$tuple' in o:
            return tuple(untag(x) for x in o['$tuple'])
        if '$bytes_b64' in o:
            return base64.b64decode(o['$bytes_b64'])
        if '$bigint' in o:
            return int(o['$bigint'])
        if '$datetime' in o:
            return dt.datetime.fromisoformat(o['$datetime'])
        return {k: untag(v) for k, v in o.items()}
    return o


def settings(args):
    return RedisSettings.from_dsn(args.redis_url)


async def outcome(job, timeout):
    """What Job.result() gives: the value, or the exception it raises."""
    try:
        value = await job.result(timeout=timeout, poll_delay=0.1)
        return {'ok': True, 'value': tagged(value)}
    except Exception as e:  # noqa: BLE001 - the exception is the observation
        return {'ok': False, 'raised': tagged(e)}


async def produce(args):
    ser, de = SERIALIZERS[args.serializer]
    pool = await create_pool(settings(args), job_serializer=ser, job_deserializer=de)
    report = {}
    for spec in json.loads(args.jobs):
        opts = {'_queue_name': args.queue, '_job_id': spec['id']}
        if 'defer_by' in spec:
            opts['_defer_by'] = spec['defer_by']
        before = int(time.time() * 1000)
        job = await pool.enqueue_job(spec['function'], *untag(spec.get('args', [])), **opts, **untag(spec.get('kwargs', {})))
        entry = {'enqueued_at_ms': before, 'status_after_enqueue': (await job.status()).value}
        entry.update(await outcome(job, args.timeout))
        entry['status'] = (await job.status()).value
        info = await job.result_info()
        if info is not None:
            entry['info'] = {'job_try': info.job_try, 'success': info.success, 'start_ms': int(info.start_time.timestamp() * 1000),
                             'function': info.function, 'queue': info.queue_name}
        report[spec['id']] = entry
    await pool.aclose()
    return report


async def py_mul(ctx, a, b):
    return a * b


async def py_fail(ctx, message):
    raise ValueError(message)


async def py_retry_once(ctx):
    if ctx['job_try'] == 1:
        raise Retry(defer=0.2)
    return ctx['job_try']


async def py_started_at(ctx):
    return int(time.time() * 1000)


async def consume(args):
    ser, de = SERIALIZERS[args.serializer]
    worker = Worker(
        functions=[py_mul, py_fail, py_retry_once, py_started_at],
        redis_settings=settings(args),
        queue_name=args.queue,
        burst=True,
        poll_delay=0.1,
        job_serializer=ser,
        job_deserializer=de,
        handle_signals=False,
    )
    try:
        await asyncio.wait_for(worker.main(), args.timeout)
    finally:
        await worker.close()
    return {'complete': worker.jobs_complete, 'failed': worker.jobs_failed, 'retried': worker.jobs_retried}


async def results(args):
    ser, de = SERIALIZERS[args.serializer]
    pool = await create_pool(settings(args), job_serializer=ser, job_deserializer=de)
    report = {}
    for job_id in args.ids.split(','):
        job = Job(job_id, pool, _queue_name=args.queue, _deserializer=de)
        entry = {'status': (await job.status()).value}
        entry.update(await outcome(job, args.timeout))
        report[job_id] = entry
    await pool.aclose()
    return report


def check(args):
    """Each case: {serializer, b64, expected}; decode with Python, compare tags."""
    cases = json.load(open(args.file))
    mismatches = []
    for case in cases:
        value = LOADERS[case['serializer']](base64.b64decode(case['b64']))
        if tagged(value) != case['expected']:
            mismatches.append({'name': case['name'], 'got': tagged(value), 'expected': case['expected']})
    return {'checked': len(cases), 'mismatches': mismatches}


def main():
    p = argparse.ArgumentParser()
    p.add_argument('command', choices=['produce', 'consume', 'results', 'check'])
    p.add_argument('--redis-url', default='redis://127.0.0.1:6379/0')
    p.add_argument('--queue', default='arq:queue')
    p.add_argument('--serializer', default='pickle', choices=sorted(SERIALIZERS))
    p.add_argument('--jobs', default='[]')
    p.add_argument('--ids', default='')
    p.add_argument('--file')
    p.add_argument('--timeout', type=float, default=30)
    args = p.parse_args()
    if args.command == 'check':
        out = check(args)
    else:
        out = asyncio.run({'produce': produce, 'consume': consume, 'results': results}[args.command](args))
    json.dump(out, sys.stdout)


if __name__ == '__main__':
    main()
