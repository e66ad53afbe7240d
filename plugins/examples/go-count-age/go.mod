module etcd-operator.example/go-count-age

go 1.24
