"""beam_ml: SageMaker's streaming ML algorithms as Apache Beam transforms."""

from pathlib import Path

from setuptools import find_packages, setup

version: dict = {}
exec(Path("beam_ml/version.py").read_text(), version)

# What DataflowRunner imports to build a job (tests/deploy/test_dataflow.py builds one with
# --dry_run; the flex template launcher, deploy/dataflow, submits one): the Dataflow API
# client and GCS, not all of apache-beam[gcp] (BigQuery, Spanner, AI Platform... ~40
# packages). google-apitools is not needed for that, but once google-cloud-storage is
# there `import apache_beam` reaches Beam's BigQuery client, which without apitools logs
# "apitools not found" through the root logger (configuring it) in every process.
# Ranges are apache-beam 2.77.0's gcp extra's; numpy stays 1.23.5.
DATAFLOW = [
    "google-cloud-dataflow-client>=0.13.0,<0.14.0",
    "google-cloud-storage>=2.18.2,<4",
    "google-apitools>=0.5.31,<0.5.32",
]

setup(
    name="beam_ml",
    version=version["__version__"],
    description="Streaming, mergeable ML training states (PCA, k-means, linear learner, ...) for Apache Beam",
    long_description=Path("README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["beam_ml", "beam_ml.*"]),
    python_requires=">=3.10,<3.12",  # mxnet 1.9.1 (the neural algorithms' engine) imports distutils
    install_requires=[
        # Pinned: every Beam release changes runner defaults and pulls its own numpy range.
        "apache-beam==2.77.0",
        # Pinned below 1.24: mxnet 1.9.1 uses np.bool etc. and fails to import on newer numpy;
        # 1.23.5 is the newest that works with apache-beam 2.77, pyarrow and the clients.
        "numpy==1.23.5",
        # scipy 1.16 needs numpy >= 1.25; 1.15 is the last line built for numpy 1.23.
        "scipy>=1.10,<1.16",
        "pyarrow>=14",  # CSV and Parquet readers (apache-beam depends on it too)
        # The engine of Factorization Machines (and NTM, DeepAR). Pinned: 1.9.1 is MXNet's
        # last release (the project is retired); it needs numpy < 1.24 and Python <= 3.11.
        # Imported lazily, only when a network trains. GPU: install mxnet-cu112 (same
        # version) instead; its kernels cover compute capability 5.0-8.6 (no Hopper).
        "mxnet==1.9.1",
        "sqlalchemy>=2.0",  # ReadSql: query results from SQLite (built in) or any SQLAlchemy URL
        "kafka-python>=2.0",  # ReadKafka: pure Python (Beam's ReadFromKafka needs Java); 2.0.2 to 3.0.12 work with Kafka 4 brokers
        # ReadPubSub (Beam's ReadFromPubSub imports it) and the Pub/Sub model announcements;
        # < 3: the major version apache-beam 2.77's gcp extra accepts.
        "google-cloud-pubsub>=2.1,<3",
        # The linear learner keeps BLAS on one thread for small SGD steps (waking
        # OpenBLAS's threads costs more than the product); scikit-learn uses it too.
        "threadpoolctl>=3",
        # s3:// inputs and checkpoints through Beam's S3 filesystem (apache-beam's aws extra)
        "boto3>=1.26,<2",
        # gs:// through Beam's GCS filesystem: of apache-beam's gcp extra, only this is needed
        "google-cloud-storage>=2.18.2,<4",
    ],
    extras_require={
        # confluent-kafka: its bundled librdkafka runs the mock Kafka cluster of tests/streaming
        "test": [
            "pytest>=7",
            "scikit-learn>=1.3,<1.8",
            "pandas>=2.0",
            "confluent-kafka>=2.3",
            # local S3 and GCS servers of tests/io/test_object_stores.py
            "moto[server]>=5,<6",
            "gcp-storage-emulator",
        ]
        + DATAFLOW,
        "dataflow": DATAFLOW,
    },
    entry_points={"console_scripts": ["beam-ml=beam_ml.cli.main:main"]},
    license="Apache-2.0",
    classifiers=[
        "Programming Language :: Python :: 3.11",
    ],
)
