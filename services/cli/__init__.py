"""`ferry`: the operator's command line for a running Ferry (publish, tasks, dead letters,
local processes, AsyncAPI docs). It talks to the services over RabbitMQ only, like they do."""
