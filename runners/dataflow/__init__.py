"""Running the import on Google Cloud Dataflow: a Flex Template (`Dockerfile`,
`metadata.json`) whose entry point, `launch`, submits the job and exits."""
